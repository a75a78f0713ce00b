//! The JSON documents of an image: index (manifest list), manifest, config,
//! in their OCI and Docker v2 spellings, and the choice of one platform's
//! manifest from an index.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::digest::Digest;
use super::error::{ImageError, Result};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// What a registry is asked to send (Accept), best first.
pub const ACCEPTED_MANIFESTS: [&str; 4] = [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST];

/// Manifests and configs are small; anything bigger is refused before it is
/// held in memory (the distribution spec suggests 4 MiB for manifests).
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
pub const MAX_CONFIG_BYTES: u64 = 8 << 20;

/// How a layer's tar is compressed, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// The compression a layer media type names, or why the layer cannot be used.
pub fn layer_compression(media_type: &str) -> Result<Compression> {
    Ok(match media_type {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar" => Compression::None,
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Compression::Gzip,
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Compression::Zstd,
        other => return Err(ImageError::Unsupported(format!("layer media type {other:?}"))),
    })
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Foreign layers live elsewhere; this store fetches only from its source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub manifests: Vec<Descriptor>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// An index or a manifest, as fetched for a tag.
#[derive(Debug, Clone)]
pub enum ManifestDoc {
    Index(Index),
    Manifest(Manifest),
}

/// Parses a manifest or index. `media_type` is what the source said it is
/// (Content-Type, descriptor); the document's own mediaType field, or its shape
/// when both are absent, decides otherwise.
pub fn parse_manifest(what: &str, media_type: Option<&str>, bytes: &[u8]) -> Result<ManifestDoc> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        schema_version: Option<u32>,
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
        config: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| ImageError::malformed(what, e))?;
    // Generic types such as application/json say nothing; the document decides.
    let declared =
        probe.media_type.as_deref().or(media_type.filter(|m| m.starts_with("application/vnd.")));
    let is_index = match declared {
        Some(OCI_INDEX | DOCKER_LIST) => true,
        Some(OCI_MANIFEST | DOCKER_MANIFEST) => false,
        Some(other) => {
            return Err(ImageError::Unsupported(format!(
                "{what}: manifest media type {other:?} (supported: OCI and Docker v2 manifests and indexes)"
            )))
        }
        None if probe.manifests.is_some() => true,
        None if probe.config.is_some() => false,
        None => return Err(ImageError::malformed(what, "neither a manifest nor an index")),
    };
    if probe.schema_version != Some(2) {
        return Err(ImageError::Unsupported(format!(
            "{what}: schemaVersion {:?} (only 2 is supported)",
            probe.schema_version
        )));
    }
    Ok(if is_index {
        ManifestDoc::Index(
            serde_json::from_slice(bytes).map_err(|e| ImageError::malformed(what, e))?,
        )
    } else {
        ManifestDoc::Manifest(
            serde_json::from_slice(bytes).map_err(|e| ImageError::malformed(what, e))?,
        )
    })
}

/// The platform this store pulls for: linux and the host's architecture in
/// Go's spelling, as registries label them.
pub fn host_platform() -> Platform {
    let (architecture, variant) = match std::env::consts::ARCH {
        "x86_64" => ("amd64", None),
        "aarch64" => ("arm64", Some("v8")),
        "x86" => ("386", None),
        "arm" => ("arm", Some("v7")),
        "powerpc64" => ("ppc64le", None),
        "s390x" => ("s390x", None),
        "riscv64" => ("riscv64", None),
        other => (other, None),
    };
    Platform {
        architecture: architecture.into(),
        os: "linux".into(),
        variant: variant.map(Into::into),
    }
}

/// Picks `want`'s manifest from an index: same os and architecture, the same
/// variant preferred, then one without a variant; entries without a platform
/// (attestations, single-platform indexes) only when nothing else fits.
pub fn select_manifest<'a>(index: &'a Index, want: &Platform) -> Option<&'a Descriptor> {
    let manifests = || {
        index
            .manifests
            .iter()
            .filter(|d| matches!(d.media_type.as_str(), OCI_MANIFEST | DOCKER_MANIFEST))
    };
    let same_arch = |d: &&Descriptor| {
        d.platform.as_ref().is_some_and(|p| p.os == want.os && p.architecture == want.architecture)
    };
    manifests()
        .filter(same_arch)
        .find(|d| d.platform.as_ref().and_then(|p| p.variant.as_ref()) == want.variant.as_ref())
        .or_else(|| {
            manifests()
                .filter(same_arch)
                .find(|d| d.platform.as_ref().is_some_and(|p| p.variant.is_none()))
        })
        .or_else(|| manifests().find(same_arch))
        .or_else(|| {
            let mut untagged = manifests().filter(|d| d.platform.is_none());
            match (untagged.next(), untagged.next()) {
                (Some(only), None) => Some(only),
                _ => None,
            }
        })
}

/// The image config file (OCI image-spec config.json), the parts a runtime
/// and the store use.
#[derive(Debug, Clone, Deserialize)]
pub struct ConfigFile {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub config: Option<RunConfig>,
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<Digest>,
}

/// What the image says to run; the CRI runtime service fills a container's
/// process from it where the pod spec is silent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunConfig {
    #[serde(rename = "Entrypoint", default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "Env", default)]
    pub env: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    pub working_dir: Option<String>,
    #[serde(rename = "User", default)]
    pub user: Option<String>,
    #[serde(rename = "StopSignal", default)]
    pub stop_signal: Option<String>,
    #[serde(rename = "Labels", default)]
    pub labels: Option<BTreeMap<String, String>>,
}

/// Parses a config blob and checks it against its manifest.
pub fn parse_config(what: &str, bytes: &[u8], manifest: &Manifest) -> Result<ConfigFile> {
    match manifest.config.media_type.as_str() {
        OCI_CONFIG | DOCKER_CONFIG => {}
        other => {
            return Err(ImageError::Unsupported(format!(
                "{what}: config media type {other:?} (not a container image)"
            )))
        }
    }
    let cfg: ConfigFile =
        serde_json::from_slice(bytes).map_err(|e| ImageError::malformed(what, e))?;
    if cfg.rootfs.kind != "layers" {
        return Err(ImageError::malformed(
            what,
            format!("rootfs type {:?} is not \"layers\"", cfg.rootfs.kind),
        ));
    }
    if cfg.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(ImageError::malformed(
            what,
            format!("{} diff_ids for {} layers", cfg.rootfs.diff_ids.len(), manifest.layers.len()),
        ));
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
    const D3: &str = "sha256:3333333333333333333333333333333333333333333333333333333333333333";

    fn desc(digest: &str, platform: Option<(&str, &str, Option<&str>)>) -> serde_json::Value {
        let mut d = serde_json::json!({"mediaType": OCI_MANIFEST, "digest": digest, "size": 10});
        if let Some((os, arch, variant)) = platform {
            d["platform"] = serde_json::json!({"os": os, "architecture": arch});
            if let Some(v) = variant {
                d["platform"]["variant"] = v.into();
            }
        }
        d
    }

    fn index(manifests: Vec<serde_json::Value>) -> Index {
        let doc =
            serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
        match parse_manifest("index", None, doc.to_string().as_bytes()).unwrap() {
            ManifestDoc::Index(i) => i,
            other => panic!("{other:?}"),
        }
    }

    fn plat(arch: &str, variant: Option<&str>) -> Platform {
        Platform { architecture: arch.into(), os: "linux".into(), variant: variant.map(Into::into) }
    }

    #[test]
    fn selects_the_host_platform_and_variant() {
        let idx = index(vec![
            desc(D1, Some(("linux", "arm64", Some("v8")))),
            desc(D2, Some(("linux", "amd64", None))),
            desc(D3, Some(("windows", "amd64", None))),
        ]);
        assert_eq!(select_manifest(&idx, &plat("amd64", None)).unwrap().digest.to_string(), D2);
        assert_eq!(
            select_manifest(&idx, &plat("arm64", Some("v8"))).unwrap().digest.to_string(),
            D1
        );
        assert!(select_manifest(&idx, &plat("s390x", None)).is_none());
        let idx = index(vec![
            desc(D1, Some(("linux", "arm", Some("v6")))),
            desc(D2, Some(("linux", "arm", Some("v7")))),
        ]);
        assert_eq!(select_manifest(&idx, &plat("arm", Some("v7"))).unwrap().digest.to_string(), D2);
    }

    #[test]
    fn an_index_of_one_unlabelled_manifest_is_used() {
        let idx = index(vec![desc(D1, None)]);
        assert_eq!(select_manifest(&idx, &host_platform()).unwrap().digest.to_string(), D1);
        let idx = index(vec![desc(D1, None), desc(D2, None)]);
        assert!(select_manifest(&idx, &host_platform()).is_none(), "ambiguous");
    }

    #[test]
    fn media_types_decide_and_schema1_is_refused() {
        let manifest = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{DOCKER_CONFIG}","digest":"{D1}","size":1}},"layers":[]}}"#
        );
        assert!(matches!(
            parse_manifest("m", Some(DOCKER_MANIFEST), manifest.as_bytes()).unwrap(),
            ManifestDoc::Manifest(_)
        ));
        assert!(matches!(
            parse_manifest("m", Some("application/json"), manifest.as_bytes()).unwrap(),
            ManifestDoc::Manifest(_)
        ));
        let err = parse_manifest(
            "m",
            Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
            br#"{"schemaVersion":1,"name":"x","fsLayers":[]}"#,
        )
        .unwrap_err();
        assert!(matches!(err, ImageError::Unsupported(_)), "{err}");
        let err = parse_manifest("m", None, br#"{"schemaVersion":1,"config":{}}"#).unwrap_err();
        assert!(matches!(err, ImageError::Unsupported(_)), "{err}");
        let err = parse_manifest("m", None, b"{not json").unwrap_err();
        assert!(matches!(err, ImageError::Malformed { .. }), "{err}");
    }

    #[test]
    fn layer_media_types() {
        assert_eq!(
            layer_compression("application/vnd.docker.image.rootfs.diff.tar.gzip").unwrap(),
            Compression::Gzip
        );
        assert_eq!(
            layer_compression("application/vnd.oci.image.layer.v1.tar").unwrap(),
            Compression::None
        );
        assert!(layer_compression("application/vnd.in-toto+json").is_err());
    }
}
