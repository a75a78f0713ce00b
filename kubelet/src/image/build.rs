//! Builds a small image from this host's busybox (the Debian package
//! busybox-static) into an OCI image layout, so tests, benchmarks and a
//! fresh cluster have an image to run without reaching any registry.

use super::error::ImageError;
use ring::digest::{digest, SHA256};
use serde_json::json;
use std::path::Path;

/// The busybox applets linked into the image's /bin.
const APPLETS: &[&str] = &[
    "sh", "sleep", "echo", "cat", "ls", "ps", "true", "false", "env", "id", "hostname", "ip",
    "wget", "nc", "httpd", "mkdir", "rm", "touch", "date", "uname", "stty",
];

fn sha256(data: &[u8]) -> String {
    let d = digest(&SHA256, data);
    format!("sha256:{}", d.as_ref().iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// Writes an OCI image layout at `dir` whose image `tag` holds
/// `busybox` (a static busybox binary) as /bin/busybox with its applets
/// linked beside it; the image runs `sh` by default. Run it as
/// `oci:DIR:TAG`.
pub fn busybox_layout(busybox: &Path, dir: &Path, tag: &str) -> Result<(), ImageError> {
    busybox_layout_with_cmd(busybox, dir, tag, &["sh"])
}

/// Like [`busybox_layout`], with `cmd` as the image's default command (a
/// pod sandbox image, for instance, runs something that never exits).
pub fn busybox_layout_with_cmd(
    busybox: &Path,
    dir: &Path,
    tag: &str,
    cmd: &[&str],
) -> Result<(), ImageError> {
    let binary = std::fs::read(busybox).map_err(ImageError::io(busybox))?;
    let mut layer = tar::Builder::new(Vec::new());
    let mut entry =
        |path: &str, kind: tar::EntryType, mode: u32, data: &[u8], link: Option<&str>| {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(kind);
            header.set_mode(mode);
            header.set_size(data.len() as u64);
            header.set_mtime(0);
            if let Some(target) = link {
                header.set_link_name(target).map_err(ImageError::io(dir))?;
            }
            header.set_path(path).map_err(ImageError::io(dir))?;
            header.set_cksum();
            layer.append(&header, data).map_err(ImageError::io(dir))
        };
    for d in ["bin", "tmp", "etc", "proc", "sys", "dev", "root", "var"] {
        entry(d, tar::EntryType::Directory, 0o755, &[], None)?;
    }
    entry("bin/busybox", tar::EntryType::Regular, 0o755, &binary, None)?;
    for applet in APPLETS {
        entry(&format!("bin/{applet}"), tar::EntryType::Symlink, 0o777, &[], Some("busybox"))?;
    }
    entry("etc/passwd", tar::EntryType::Regular, 0o644, b"root:x:0:0:root:/root:/bin/sh\n", None)?;
    entry("etc/group", tar::EntryType::Regular, 0o644, b"root:x:0:\n", None)?;
    let layer = layer.into_inner().map_err(ImageError::io(dir))?;
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let config = json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Cmd": cmd, "Env": ["PATH=/bin"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [sha256(&layer)]},
    })
    .to_string()
    .into_bytes();
    let descriptor = |media: &str, data: &[u8]| json!({"mediaType": media, "digest": sha256(data), "size": data.len()});
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
        "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", &layer)],
    })
    .to_string()
    .into_bytes();
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(ImageError::io(&blobs))?;
    for data in [&layer, &config, &manifest] {
        let path = blobs.join(&sha256(data)["sha256:".len()..]);
        std::fs::write(&path, data).map_err(ImageError::io(&path))?;
    }
    let mut top = descriptor("application/vnd.oci.image.manifest.v1+json", &manifest);
    top["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
    let index = json!({"schemaVersion": 2, "manifests": [top]}).to_string();
    std::fs::write(dir.join("index.json"), index).map_err(ImageError::io(dir))?;
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion": "1.0.0"}"#)
        .map_err(ImageError::io(dir))?;
    Ok(())
}
