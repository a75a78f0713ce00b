//! The Registration service on `<dir>/kubelet.sock`: plugins announce
//! their resource and socket here; each accepted one gets a session.

use super::error::DevicesError;
use super::manager::DeviceManager;
use api::registration_server::{Registration, RegistrationServer};
use berth_proto::device_plugin_v1beta1 as api;
use std::future::Future;
use std::path::Path;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;

/// The API version this kubelet speaks.
pub const VERSION: &str = "v1beta1";

pub(super) struct Registrar {
    manager: DeviceManager,
}

impl Registrar {
    pub fn new(manager: DeviceManager) -> Registrar {
        Registrar { manager }
    }

    /// Binds the socket now (a stale one from an earlier kubelet is
    /// replaced, which is how plugins learn to register again) and returns
    /// the future that serves it until `stop`, then removes it.
    pub fn bind(
        self,
        socket: &Path,
        stop: CancellationToken,
    ) -> Result<impl Future<Output = ()>, DevicesError> {
        match std::fs::remove_file(socket) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(DevicesError::io(socket)(e)),
        }
        let listener = tokio::net::UnixListener::bind(socket).map_err(DevicesError::io(socket))?;
        let socket = socket.to_path_buf();
        Ok(async move {
            let served = tonic::transport::Server::builder()
                .add_service(RegistrationServer::new(self))
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), stop.cancelled())
                .await;
            if let Err(e) = served {
                tracing::error!(socket = %socket.display(), error = %e, "the device plugin Registration service failed");
            }
            let _ = std::fs::remove_file(&socket);
        })
    }

    fn check(&self, r: &api::RegisterRequest) -> Result<(), String> {
        if r.version != VERSION {
            return Err(format!(
                "version {:?} is not supported (this kubelet speaks {VERSION})",
                r.version
            ));
        }
        check_resource_name(&r.resource_name)?;
        let endpoint = Path::new(&r.endpoint);
        let plain = endpoint.components().count() == 1
            && endpoint.file_name().is_some_and(|n| n == r.endpoint.as_str());
        if !plain || r.endpoint == super::manager::KUBELET_SOCKET {
            return Err(format!(
                "endpoint {:?} must be a socket's file name in {}",
                r.endpoint,
                self.manager.dir().display()
            ));
        }
        Ok(())
    }
}

/// An extended resource name: `domain/name`, outside kubernetes.io, in
/// Kubernetes' qualified-name characters.
pub(super) fn check_resource_name(name: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("resource name {name:?} {why}"));
    let Some((domain, short)) = name.split_once('/') else {
        return bad("must be vendor-domain/resource");
    };
    if domain == "kubernetes.io" || domain.ends_with(".kubernetes.io") {
        return bad("may not be in the kubernetes.io domain");
    }
    let domain_ok = !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|l| {
            !l.is_empty()
                && l.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    let short_ok = !short.is_empty()
        && short.len() <= 63
        && short.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && short.starts_with(|c: char| c.is_ascii_alphanumeric())
        && short.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !domain_ok || !short_ok {
        return bad("is not a qualified name (vendor-domain/resource)");
    }
    Ok(())
}

#[tonic::async_trait]
impl Registration for Registrar {
    async fn register(
        &self,
        request: tonic::Request<api::RegisterRequest>,
    ) -> Result<tonic::Response<api::Empty>, tonic::Status> {
        let r = request.into_inner();
        if let Err(why) = self.check(&r) {
            tracing::warn!(resource = %r.resource_name, endpoint = %r.endpoint, reason = %why, "device plugin registration refused");
            return Err(tonic::Status::invalid_argument(why));
        }
        tracing::info!(resource = %r.resource_name, endpoint = %r.endpoint, "device plugin registered");
        self.manager.register(r);
        Ok(tonic::Response::new(api::Empty {}))
    }
}

#[cfg(test)]
mod tests {
    use super::check_resource_name;

    #[test]
    fn resource_names_are_extended_resource_names() {
        for good in ["example.com/dev", "nvidia.com/gpu", "a.b-c.io/x_y.z-1"] {
            assert!(check_resource_name(good).is_ok(), "{good}");
        }
        for bad in [
            "gpu",
            "kubernetes.io/x",
            "x.kubernetes.io/y",
            "Example.com/x",
            "a.com/",
            "/x",
            "a.com/-x",
            "a..b/x",
        ] {
            assert!(check_resource_name(bad).is_err(), "{bad}");
        }
    }
}
