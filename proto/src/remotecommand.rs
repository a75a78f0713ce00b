//! Kubernetes' remote command stream protocol over WebSockets
//! (`v5.channel.k8s.io`, `v4.channel.k8s.io`), as kubectl, the API server,
//! the kubelet and CRI streaming servers speak it for exec and attach.
//!
//! Every binary message starts with a channel byte: 0 stdin, 1 stdout,
//! 2 stderr, 3 the error channel (one `Status` JSON when the command ends),
//! 4 terminal resizes (`{"Width":W,"Height":H}`). v5 adds 255: a close of
//! the channel named by the next byte (how a client ends stdin).

/// The newest protocol, with channel close.
pub const V5: &str = "v5.channel.k8s.io";
/// The protocol before v5: no close; stdin ends with the connection.
pub const V4: &str = "v4.channel.k8s.io";
/// The protocols served, most preferred first.
pub const PROTOCOLS: [&str; 2] = [V5, V4];

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
pub const CLOSE: u8 = 255;

/// `data` on `channel`, as one binary message.
pub fn frame(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 1);
    out.push(channel);
    out.extend_from_slice(data);
    out
}

/// A terminal size as the resize channel carries it.
pub fn resize(width: u32, height: u32) -> Vec<u8> {
    serde_json::json!({"Width": width, "Height": height}).to_string().into_bytes()
}

/// A resize channel message: (width, height).
pub fn parse_resize(data: &[u8]) -> Option<(u32, u32)> {
    #[derive(serde::Deserialize)]
    struct Size {
        #[serde(rename = "Width")]
        width: u32,
        #[serde(rename = "Height")]
        height: u32,
    }
    serde_json::from_slice::<Size>(data).ok().map(|s| (s.width, s.height))
}

/// The error channel's message for a command that exited with `code`:
/// Success for 0, else Failure with reason NonZeroExitCode and the code as
/// an ExitCode cause.
pub fn exit_status(code: i32) -> Vec<u8> {
    let status = if code == 0 {
        serde_json::json!({"metadata": {}, "status": "Success"})
    } else {
        serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        })
    };
    status.to_string().into_bytes()
}

/// The error channel's message for a command that could not run.
pub fn failure(message: &str) -> Vec<u8> {
    serde_json::json!({
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "InternalError",
        "code": 500,
    })
    .to_string()
    .into_bytes()
}

/// What an error channel message says: the exit code, or why the command
/// did not run.
pub fn parse_status(data: &[u8]) -> Result<i32, String> {
    let status: serde_json::Value =
        serde_json::from_slice(data).map_err(|e| format!("malformed exec status: {e}"))?;
    if status["status"] == "Success" {
        return Ok(0);
    }
    if status["reason"] == "NonZeroExitCode" {
        let code = status["details"]["causes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["reason"] == "ExitCode")
            .and_then(|c| c["message"].as_str()?.parse().ok());
        if let Some(code) = code {
            return Ok(code);
        }
    }
    Err(status["message"].as_str().unwrap_or("exec failed").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_round_trip_through_the_error_channel() {
        assert_eq!(parse_status(&exit_status(0)), Ok(0));
        assert_eq!(parse_status(&exit_status(3)), Ok(3));
        assert_eq!(parse_status(&failure("no such file")), Err("no such file".to_string()));
        assert!(parse_status(b"{").is_err());
    }

    #[test]
    fn resizes_round_trip() {
        assert_eq!(parse_resize(&resize(80, 24)), Some((80, 24)));
        assert_eq!(parse_resize(b"{\"Width\":1}"), None);
    }
}
