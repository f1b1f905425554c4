//! Asking the running gateway through its control socket: the gateway's own machine's way
//! in, open to its user. Never the store itself: a monitor must not lock the gateway out.

use crate::api::control::{socket_path, ControlClient};
use crate::config::Config;

/// Calls `function` (without parameters) and returns its result; the reason in words when
/// no gateway answers or the call fails. `part` names the check's part for that reason.
pub(super) async fn invoke(
    config: &Config,
    function: &str,
    part: &str,
) -> Result<serde_json::Value, String> {
    let data_dir = &config.gateway.data_dir;
    let mut client = match ControlClient::connect(data_dir).await {
        Ok(Some(client)) => client,
        Ok(None) => {
            return Err(format!(
                "no gateway answers on the control socket {} (is it running with this \
                 configuration? the {part} check runs on the gateway's machine)",
                socket_path(data_dir).display()
            ))
        }
        Err(e) => return Err(e.to_string()),
    };
    let answer = client
        .invoke(function, crate::api::Params::new())
        .await
        .map_err(|e| e.to_string())?;
    crate::api::into_result(function, answer).map_err(|e| format!("{function} failed: {e:#}"))
}
