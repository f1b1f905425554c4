//! insta snapshots of the canonical wire transcripts (redacted; see `transcripts`). A changed
//! snapshot is a changed protocol behaviour: review it like code.

use conformance::target::Target;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canonical_transcripts() {
    let mut target = Target::start().await.unwrap();
    let transcripts = conformance::transcripts::all(&target).await.unwrap();
    target.stop().await;
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("snapshots");
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| {
        for (name, text) in transcripts {
            insta::assert_snapshot!(name, text);
        }
    });
}
