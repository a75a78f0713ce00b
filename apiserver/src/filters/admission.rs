//! Admission: what a write must pass besides permission. Each plugin has a
//! request phase, once per write with the request's headers, and two phases
//! on each object a verb is about to store: mutating (every plugin), then
//! validating (every plugin), so validation sees the object as stored.

use super::RequestInfo;
use crate::error::ApiError;
use crate::registry::Fence;
use berth_proto::meta_v1::{ObjectMeta, StatusCause};
use std::any::Any;

/// An object being written, whatever its kind, as admission plugins see it.
/// Every API kind implements it.
pub trait Admitted {
    /// "Pod", "Deployment", ...
    fn kind(&self) -> &'static str;
    fn metadata(&self) -> &ObjectMeta;
    fn metadata_mut(&mut self) -> &mut ObjectMeta;
    /// Fills in what Kubernetes defaults for this kind.
    fn apply_defaults(&mut self);
    /// The object's problems, one cause per field; when it has none and
    /// `old` (the stored object it replaces) is given, what may not change
    /// from `old`. An `old` of another kind is itself a problem.
    fn validate(&self, old: Option<&dyn Admitted>) -> Vec<StatusCause>;
    /// For a plugin about one kind: `as_any().downcast_ref::<Pod>()`.
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// One admission plugin. Every phase defaults to admitting, so a plugin
/// writes only the phases it needs; an error refuses the request as it is.
///
/// The object phases run where a verb writes a whole object: create and
/// update (which patch and scale go through). Status writes and deletes
/// (evictions too) run the validating phase on the stored object instead
/// (`validate_stored`); binds run none. They run inside the write's
/// read-modify-write and may run again when it is retried after a
/// conflict, so they must not block and must have no effects outside the
/// object.
pub trait Admission: Send + Sync {
    /// Once per write, before the verb reads anything: may refuse, or read
    /// what the request carries (its headers) into `info`.
    fn admit_request(
        &self,
        _request: &tonic::Request<()>,
        _info: &mut RequestInfo,
    ) -> Result<(), ApiError> {
        Ok(())
    }

    /// May change the object; `old` is the stored object an update replaces.
    fn mutate(
        &self,
        _info: &RequestInfo,
        _object: &mut dyn Admitted,
        _old: Option<&dyn Admitted>,
    ) -> Result<(), ApiError> {
        Ok(())
    }

    /// May only refuse: runs after every plugin has mutated.
    fn validate(
        &self,
        _info: &RequestInfo,
        _object: &dyn Admitted,
        _old: Option<&dyn Admitted>,
    ) -> Result<(), ApiError> {
        Ok(())
    }

    /// May only refuse a write to part of a stored object: a status write
    /// (`object`: what it stores) or a delete (`object`: None). `stored` is
    /// the object as read, which the write is conditioned on.
    fn validate_stored(
        &self,
        _info: &RequestInfo,
        _object: Option<&dyn Admitted>,
        _stored: &dyn Admitted,
    ) -> Result<(), ApiError> {
        Ok(())
    }
}

/// Reads a leader-elected writer's fencing token (the `berth-fence` header)
/// into the request, so its write goes through a registry that checks the
/// token in the write's own transaction and refuses it once another holder
/// has taken the Lease.
pub(super) struct Fencing;

impl Admission for Fencing {
    fn admit_request(
        &self,
        request: &tonic::Request<()>,
        info: &mut RequestInfo,
    ) -> Result<(), ApiError> {
        use crate::api::FENCE_HEADER;
        let Some(value) = request.metadata().get(FENCE_HEADER) else { return Ok(()) };
        let text = value
            .to_str()
            .map_err(|_| ApiError::BadRequest(format!("{FENCE_HEADER} is not text")))?;
        info.fence = Some(Fence::parse(text)?);
        Ok(())
    }
}

/// What Kubernetes defaults, filled in before anything validates.
pub(super) struct Defaults;

impl Admission for Defaults {
    fn mutate(
        &self,
        _: &RequestInfo,
        object: &mut dyn Admitted,
        _: Option<&dyn Admitted>,
    ) -> Result<(), ApiError> {
        object.apply_defaults();
        Ok(())
    }
}

/// Kubernetes' validation of the supported fields: Invalid, one cause per
/// field.
pub(super) struct Validation;

impl Admission for Validation {
    fn validate(
        &self,
        _: &RequestInfo,
        object: &dyn Admitted,
        old: Option<&dyn Admitted>,
    ) -> Result<(), ApiError> {
        let causes = object.validate(old);
        if causes.is_empty() {
            return Ok(());
        }
        Err(ApiError::Invalid {
            kind: object.kind().into(),
            name: object.metadata().name.clone(),
            causes,
        })
    }
}

/// What every write passes: fencing, defaulting, validation.
pub(super) fn default_chain() -> Vec<Box<dyn Admission>> {
    vec![Box::new(Fencing), Box::new(Defaults), Box::new(Validation)]
}

/// An admission plugin `berth server --enable-admission-plugins` names, in
/// Kubernetes' spelling; fencing, defaulting and validation always run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdmissionPlugin {
    /// A node's writes reach only its own Node, Lease and bound pods.
    NodeRestriction,
    /// The Pod Security Standards, per namespace label.
    PodSecurity,
}

impl std::str::FromStr for AdmissionPlugin {
    type Err = String;

    fn from_str(name: &str) -> Result<AdmissionPlugin, String> {
        match name {
            "NodeRestriction" => Ok(AdmissionPlugin::NodeRestriction),
            "PodSecurity" => Ok(AdmissionPlugin::PodSecurity),
            other => Err(format!(
                "unknown admission plugin {other:?}; known: NodeRestriction, PodSecurity"
            )),
        }
    }
}

/// The default chain (fencing, defaults, validation) and then `enabled`,
/// in Kubernetes' order whatever order they are named in. PodSecurity's
/// namespace cache reads `registry` until `stop`.
pub fn admission_plugins(
    enabled: &[AdmissionPlugin],
    pod_security: &super::PodSecurityConfig,
    registry: &crate::Registry<berth_raft_store::Store>,
    stop: &tokio_util::sync::CancellationToken,
) -> Vec<Box<dyn Admission>> {
    let mut chain = default_chain();
    if enabled.contains(&AdmissionPlugin::NodeRestriction) {
        chain.push(Box::new(super::NodeRestriction));
    }
    if enabled.contains(&AdmissionPlugin::PodSecurity) {
        let config = pod_security.clone();
        chain.push(Box::new(super::PodSecurity::new(config, registry.clone(), stop.clone())));
    }
    chain
}

pub(super) fn admit_request(
    chain: &[Box<dyn Admission>],
    request: &tonic::Request<()>,
    info: &mut RequestInfo,
) -> Result<(), ApiError> {
    chain.iter().try_for_each(|plugin| plugin.admit_request(request, info))
}

pub(super) fn admit(
    chain: &[Box<dyn Admission>],
    info: &RequestInfo,
    object: &mut dyn Admitted,
    old: Option<&dyn Admitted>,
) -> Result<(), ApiError> {
    for plugin in chain {
        plugin.mutate(info, object, old)?;
    }
    chain.iter().try_for_each(|plugin| plugin.validate(info, object, old))
}

pub(super) fn admit_stored(
    chain: &[Box<dyn Admission>],
    info: &RequestInfo,
    object: Option<&dyn Admitted>,
    stored: &dyn Admitted,
) -> Result<(), ApiError> {
    chain.iter().try_for_each(|plugin| plugin.validate_stored(info, object, stored))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filters::{request_info, Filters};
    use berth_proto::core_v1::{Container, Pod, PodSpec};

    fn pod(containers: &[&str]) -> Pod {
        Pod {
            metadata: Some(ObjectMeta { name: "web".into(), ..Default::default() }),
            spec: Some(PodSpec {
                containers: containers
                    .iter()
                    .map(|name| Container {
                        name: name.to_string(),
                        image: "busybox".into(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn fields(err: ApiError) -> Vec<String> {
        match err {
            ApiError::Invalid { causes, .. } => causes.into_iter().map(|c| c.field).collect(),
            other => panic!("not Invalid: {other:?}"),
        }
    }

    #[test]
    fn the_default_chain_defaults_then_validates() {
        let filters = Filters::default();
        let mut good = pod(&["c"]);
        filters.admit(&request_info("create", "web"), &mut good, None).unwrap();
        let spec = good.spec.unwrap();
        assert_eq!(spec.restart_policy, "Always");
        assert_eq!(spec.containers[0].image_pull_policy, "Always");

        let err = filters.admit(&request_info("create", "web"), &mut pod(&[]), None).unwrap_err();
        assert_eq!(err.to_string(), r#"Pod "web" is invalid: spec.containers: Required value"#);
    }

    #[test]
    fn an_update_reports_its_own_problems_before_what_it_may_not_change() {
        let filters = Filters::default();
        let mut old = pod(&["c"]);
        filters.admit(&request_info("create", "web"), &mut old, None).unwrap();
        let update = request_info("update", "web");
        let err = filters.admit(&update, &mut pod(&["c", "d"]), Some(&old)).unwrap_err();
        assert_eq!(fields(err), ["spec"]);
        let err = filters.admit(&update, &mut pod(&["c", "c"]), Some(&old)).unwrap_err();
        assert_eq!(fields(err), ["spec.containers[1].name"]);
    }

    /// Labels every object with a value that is not a valid label value.
    struct BadLabel;

    impl Admission for BadLabel {
        fn mutate(
            &self,
            _: &RequestInfo,
            object: &mut dyn Admitted,
            _: Option<&dyn Admitted>,
        ) -> Result<(), ApiError> {
            object.metadata_mut().labels.insert("team".into(), "not valid!".into());
            Ok(())
        }
    }

    #[test]
    fn validation_sees_what_later_plugins_mutated() {
        let mut filters = Filters::default();
        filters.admission.push(Box::new(BadLabel));
        let err =
            filters.admit(&request_info("create", "web"), &mut pod(&["c"]), None).unwrap_err();
        assert_eq!(fields(err), ["metadata.labels[team]"]);
    }

    #[test]
    fn an_update_from_another_kind_is_refused() {
        let mut new = pod(&["c"]);
        new.apply_defaults();
        let old = berth_proto::core_v1::Namespace::default();
        let causes = Admitted::validate(&new, Some(&old));
        let fields: Vec<_> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["kind"], "{causes:?}");
    }

    #[test]
    fn fencing_reads_the_token_header() {
        let filters = Filters::default();
        let mut request = tonic::Request::new(());
        let mut info = request_info("create", "web");
        filters.admit_request(&request, &mut info).unwrap();
        assert_eq!(info.fence, None);

        request.metadata_mut().insert("berth-fence", "kube-system/scheduler/42".parse().unwrap());
        filters.admit_request(&request, &mut info).unwrap();
        let fence =
            Fence { namespace: "kube-system".into(), name: "scheduler".into(), revision: 42 };
        assert_eq!(info.fence, Some(fence));

        request.metadata_mut().insert("berth-fence", "no-slashes".parse().unwrap());
        let err = filters.admit_request(&request, &mut info).unwrap_err();
        assert!(matches!(err, ApiError::BadRequest(_)), "{err:?}");
    }
}
