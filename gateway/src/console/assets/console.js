// The console's only script: small conveniences on top of pages that work without it.
// - Copy buttons (`data-copy="<id>"`) copy the text of the element with that id.
// - A select with `data-autosubmit` submits its form on change; buttons marked
//   `data-without-js` are then hidden.
// - A checkbox with `data-enables="<id>"` enables that button only while ticked (the
//   server requires the box anyway).
// - A file input with `data-base64-into="<id>"` (hidden without script: its row is
//   `data-reveal`ed) puts the chosen file, base64, into that text area: the console's forms
//   are URL-encoded, so without script the admin pastes the base64 there instead.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.hidden = false;
    button.addEventListener("click", async () => {
      const source = document.getElementById(button.dataset.copy);
      if (!source) {
        return;
      }
      const label = button.textContent;
      try {
        await navigator.clipboard.writeText(source.textContent.trim());
        button.textContent = button.dataset.copied || "✓";
      } catch (_) {
        // No clipboard access (an insecure context or a denied permission): select the
        // text so the user can copy it by hand.
        const range = document.createRange();
        range.selectNodeContents(source);
        const selection = window.getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
      }
      setTimeout(() => {
        button.textContent = label;
      }, 2000);
    });
  }

  for (const select of document.querySelectorAll("select[data-autosubmit]")) {
    select.addEventListener("change", () => select.form.requestSubmit());
    for (const button of select.form.querySelectorAll("[data-without-js]")) {
      button.hidden = true;
    }
  }

  for (const box of document.querySelectorAll("input[type=checkbox][data-enables]")) {
    const target = document.getElementById(box.dataset.enables);
    if (!target) {
      continue;
    }
    const update = () => {
      target.disabled = !box.checked;
    };
    box.addEventListener("change", update);
    update();
  }

  for (const input of document.querySelectorAll("input[type=file][data-base64-into]")) {
    const target = document.getElementById(input.dataset.base64Into);
    const row = document.getElementById(input.dataset.reveal);
    if (!target) {
      continue;
    }
    if (row) {
      row.hidden = false;
    }
    input.addEventListener("change", () => {
      const file = input.files && input.files[0];
      if (!file) {
        return;
      }
      const reader = new FileReader();
      reader.addEventListener("load", () => {
        // A data: URL; the base64 follows the first comma.
        const url = String(reader.result);
        target.value = url.slice(url.indexOf(",") + 1);
      });
      reader.readAsDataURL(file);
    });
  }
});
