//! Kubernetes' protobuf field numbers (k8s.io/api and apimachinery
//! generated.proto, v1.32) for the messages the supported kinds hold, one
//! table per message. A field berth models is read as its type; `Other`
//! marks one it does not (read only to be reported as unknown when set).

use super::{Field, Ty};

/// meta.v1.OwnerReference
const OWNER_REFERENCE: &[Field] = &[
    Field(5, "apiVersion", Ty::Str),
    Field(1, "kind", Ty::Str),
    Field(3, "name", Ty::Str),
    Field(4, "uid", Ty::Str),
    Field(6, "controller", Ty::OptBool),
    Field(7, "blockOwnerDeletion", Ty::OptBool),
];

/// meta.v1.ObjectMeta
const OBJECT_META: &[Field] = &[
    Field(1, "name", Ty::Str),
    Field(2, "generateName", Ty::Str),
    Field(3, "namespace", Ty::Str),
    Field(4, "selfLink", Ty::Skip),
    Field(5, "uid", Ty::Str),
    Field(6, "resourceVersion", Ty::Str),
    Field(7, "generation", Ty::Int),
    Field(8, "creationTimestamp", Ty::Time),
    Field(9, "deletionTimestamp", Ty::Time),
    Field(10, "deletionGracePeriodSeconds", Ty::OptInt),
    Field(11, "labels", Ty::StrMap),
    Field(12, "annotations", Ty::StrMap),
    Field(13, "ownerReferences", Ty::Msgs(OWNER_REFERENCE)),
    Field(14, "finalizers", Ty::Strs),
    Field(17, "managedFields", Ty::Skip),
];

/// core.v1.NamespaceSpec
const NAMESPACE_SPEC: &[Field] = &[Field(1, "finalizers", Ty::Strs)];

/// core.v1.NamespaceCondition
const NAMESPACE_CONDITION: &[Field] = &[
    Field(1, "type", Ty::Str),
    Field(2, "status", Ty::Str),
    Field(4, "lastTransitionTime", Ty::Time),
    Field(5, "reason", Ty::Str),
    Field(6, "message", Ty::Str),
];

/// core.v1.NamespaceStatus
const NAMESPACE_STATUS: &[Field] =
    &[Field(1, "phase", Ty::Str), Field(2, "conditions", Ty::Msgs(NAMESPACE_CONDITION))];

/// core.v1.Namespace
pub(super) const NAMESPACE: &[Field] = &[
    Field(1, "metadata", Ty::Msg(OBJECT_META)),
    Field(2, "spec", Ty::Msg(NAMESPACE_SPEC)),
    Field(3, "status", Ty::Msg(NAMESPACE_STATUS)),
];

/// core.v1.Taint
const TAINT: &[Field] = &[
    Field(1, "key", Ty::Str),
    Field(2, "value", Ty::Str),
    Field(3, "effect", Ty::Str),
    Field(4, "timeAdded", Ty::Time),
];

/// core.v1.NodeSpec
const NODE_SPEC: &[Field] = &[
    Field(1, "podCIDR", Ty::Str),
    Field(7, "podCIDRs", Ty::Strs),
    Field(3, "providerID", Ty::Str),
    Field(4, "unschedulable", Ty::Bool),
    Field(5, "taints", Ty::Msgs(TAINT)),
    Field(6, "configSource", Ty::Other),
    Field(2, "externalID", Ty::Other),
];

/// core.v1.NodeCondition
const NODE_CONDITION: &[Field] = &[
    Field(1, "type", Ty::Str),
    Field(2, "status", Ty::Str),
    Field(3, "lastHeartbeatTime", Ty::Time),
    Field(4, "lastTransitionTime", Ty::Time),
    Field(5, "reason", Ty::Str),
    Field(6, "message", Ty::Str),
];

/// core.v1.NodeAddress
const NODE_ADDRESS: &[Field] = &[Field(1, "type", Ty::Str), Field(2, "address", Ty::Str)];

/// core.v1.DaemonEndpoint
const DAEMON_ENDPOINT: &[Field] = &[Field(1, "Port", Ty::Int)];

/// core.v1.NodeDaemonEndpoints
const NODE_DAEMON_ENDPOINTS: &[Field] = &[Field(1, "kubeletEndpoint", Ty::Msg(DAEMON_ENDPOINT))];

/// core.v1.NodeSystemInfo
const NODE_SYSTEM_INFO: &[Field] = &[
    Field(1, "machineID", Ty::Str),
    Field(2, "systemUUID", Ty::Str),
    Field(3, "bootID", Ty::Str),
    Field(4, "kernelVersion", Ty::Str),
    Field(5, "osImage", Ty::Str),
    Field(6, "containerRuntimeVersion", Ty::Str),
    Field(7, "kubeletVersion", Ty::Str),
    Field(8, "kubeProxyVersion", Ty::Str),
    Field(9, "operatingSystem", Ty::Str),
    Field(10, "architecture", Ty::Str),
];

/// core.v1.ContainerImage
const CONTAINER_IMAGE: &[Field] = &[Field(1, "names", Ty::Strs), Field(2, "sizeBytes", Ty::Int)];

/// core.v1.NodeStatus
const NODE_STATUS: &[Field] = &[
    Field(1, "capacity", Ty::QuantityMap),
    Field(2, "allocatable", Ty::QuantityMap),
    Field(3, "phase", Ty::Str),
    Field(4, "conditions", Ty::Msgs(NODE_CONDITION)),
    Field(5, "addresses", Ty::Msgs(NODE_ADDRESS)),
    Field(6, "daemonEndpoints", Ty::Msg(NODE_DAEMON_ENDPOINTS)),
    Field(7, "nodeInfo", Ty::Msg(NODE_SYSTEM_INFO)),
    Field(8, "images", Ty::Msgs(CONTAINER_IMAGE)),
    Field(9, "volumesInUse", Ty::Other),
    Field(10, "volumesAttached", Ty::Other),
    Field(11, "config", Ty::Other),
    Field(12, "runtimeHandlers", Ty::Other),
    Field(13, "features", Ty::Other),
];

/// core.v1.Node
pub(super) const NODE: &[Field] = &[
    Field(1, "metadata", Ty::Msg(OBJECT_META)),
    Field(2, "spec", Ty::Msg(NODE_SPEC)),
    Field(3, "status", Ty::Msg(NODE_STATUS)),
];

/// core.v1.HostPathVolumeSource
const HOST_PATH_VOLUME_SOURCE: &[Field] =
    &[Field(1, "path", Ty::Str), Field(2, "type", Ty::OptStr)];

/// core.v1.EmptyDirVolumeSource
const EMPTY_DIR_VOLUME_SOURCE: &[Field] =
    &[Field(1, "medium", Ty::Str), Field(2, "sizeLimit", Ty::Quantity)];

/// core.v1.VolumeSource
const VOLUME_SOURCE: &[Field] = &[
    Field(1, "hostPath", Ty::Msg(HOST_PATH_VOLUME_SOURCE)),
    Field(2, "emptyDir", Ty::Msg(EMPTY_DIR_VOLUME_SOURCE)),
    Field(3, "gcePersistentDisk", Ty::Other),
    Field(4, "awsElasticBlockStore", Ty::Other),
    Field(5, "gitRepo", Ty::Other),
    Field(6, "secret", Ty::Other),
    Field(7, "nfs", Ty::Other),
    Field(8, "iscsi", Ty::Other),
    Field(9, "glusterfs", Ty::Other),
    Field(10, "persistentVolumeClaim", Ty::Other),
    Field(11, "rbd", Ty::Other),
    Field(12, "flexVolume", Ty::Other),
    Field(13, "cinder", Ty::Other),
    Field(14, "cephfs", Ty::Other),
    Field(15, "flocker", Ty::Other),
    Field(16, "downwardAPI", Ty::Other),
    Field(17, "fc", Ty::Other),
    Field(18, "azureFile", Ty::Other),
    Field(19, "configMap", Ty::Other),
    Field(20, "vsphereVolume", Ty::Other),
    Field(21, "quobyte", Ty::Other),
    Field(22, "azureDisk", Ty::Other),
    Field(23, "photonPersistentDisk", Ty::Other),
    Field(26, "projected", Ty::Other),
    Field(24, "portworxVolume", Ty::Other),
    Field(25, "scaleIO", Ty::Other),
    Field(27, "storageos", Ty::Other),
    Field(28, "csi", Ty::Other),
    Field(29, "ephemeral", Ty::Other),
    Field(30, "image", Ty::Other),
];

/// core.v1.Volume
const VOLUME: &[Field] =
    &[Field(1, "name", Ty::Str), Field(2, "volumeSource", Ty::Inline(VOLUME_SOURCE))];

/// core.v1.ContainerPort
const CONTAINER_PORT: &[Field] = &[
    Field(1, "name", Ty::Str),
    Field(2, "hostPort", Ty::Int),
    Field(3, "containerPort", Ty::Int),
    Field(4, "protocol", Ty::Str),
    Field(5, "hostIP", Ty::Str),
];

/// core.v1.ObjectFieldSelector
const OBJECT_FIELD_SELECTOR: &[Field] =
    &[Field(1, "apiVersion", Ty::Str), Field(2, "fieldPath", Ty::Str)];

/// core.v1.ResourceFieldSelector
const RESOURCE_FIELD_SELECTOR: &[Field] = &[
    Field(1, "containerName", Ty::Str),
    Field(2, "resource", Ty::Str),
    Field(3, "divisor", Ty::Quantity),
];

/// core.v1.EnvVarSource
const ENV_VAR_SOURCE: &[Field] = &[
    Field(1, "fieldRef", Ty::Msg(OBJECT_FIELD_SELECTOR)),
    Field(2, "resourceFieldRef", Ty::Msg(RESOURCE_FIELD_SELECTOR)),
    Field(3, "configMapKeyRef", Ty::Other),
    Field(4, "secretKeyRef", Ty::Other),
];

/// core.v1.EnvVar
const ENV_VAR: &[Field] = &[
    Field(1, "name", Ty::Str),
    Field(2, "value", Ty::Str),
    Field(3, "valueFrom", Ty::Msg(ENV_VAR_SOURCE)),
];

/// core.v1.ResourceRequirements
const RESOURCE_REQUIREMENTS: &[Field] = &[
    Field(1, "limits", Ty::QuantityMap),
    Field(2, "requests", Ty::QuantityMap),
    Field(3, "claims", Ty::Other),
];

/// core.v1.VolumeMount
const VOLUME_MOUNT: &[Field] = &[
    Field(1, "name", Ty::Str),
    Field(2, "readOnly", Ty::Bool),
    Field(7, "recursiveReadOnly", Ty::Other),
    Field(3, "mountPath", Ty::Str),
    Field(4, "subPath", Ty::Str),
    Field(5, "mountPropagation", Ty::Other),
    Field(6, "subPathExpr", Ty::Other),
];

/// core.v1.ExecAction
const EXEC_ACTION: &[Field] = &[Field(1, "command", Ty::Strs)];

/// core.v1.HTTPHeader
const HTTP_HEADER: &[Field] = &[Field(1, "name", Ty::Str), Field(2, "value", Ty::Str)];

/// core.v1.HTTPGetAction
const HTTP_GET_ACTION: &[Field] = &[
    Field(1, "path", Ty::Str),
    Field(2, "port", Ty::IntOrString),
    Field(3, "host", Ty::Str),
    Field(4, "scheme", Ty::Str),
    Field(5, "httpHeaders", Ty::Msgs(HTTP_HEADER)),
];

/// core.v1.TCPSocketAction
const TCP_SOCKET_ACTION: &[Field] = &[Field(1, "port", Ty::IntOrString), Field(2, "host", Ty::Str)];

/// core.v1.ProbeHandler
const PROBE_HANDLER: &[Field] = &[
    Field(1, "exec", Ty::Msg(EXEC_ACTION)),
    Field(2, "httpGet", Ty::Msg(HTTP_GET_ACTION)),
    Field(3, "tcpSocket", Ty::Msg(TCP_SOCKET_ACTION)),
    Field(4, "grpc", Ty::Other),
];

/// core.v1.Probe
const PROBE: &[Field] = &[
    Field(1, "handler", Ty::Inline(PROBE_HANDLER)),
    Field(2, "initialDelaySeconds", Ty::Int),
    Field(3, "timeoutSeconds", Ty::Int),
    Field(4, "periodSeconds", Ty::Int),
    Field(5, "successThreshold", Ty::Int),
    Field(6, "failureThreshold", Ty::Int),
    Field(7, "terminationGracePeriodSeconds", Ty::OptInt),
];

/// core.v1.Capabilities
const CAPABILITIES: &[Field] = &[Field(1, "add", Ty::Strs), Field(2, "drop", Ty::Strs)];

/// core.v1.SeccompProfile
const SECCOMP_PROFILE: &[Field] =
    &[Field(1, "type", Ty::Str), Field(2, "localhostProfile", Ty::OptStr)];

/// core.v1.SecurityContext
const SECURITY_CONTEXT: &[Field] = &[
    Field(1, "capabilities", Ty::Msg(CAPABILITIES)),
    Field(2, "privileged", Ty::OptBool),
    Field(3, "seLinuxOptions", Ty::Other),
    Field(10, "windowsOptions", Ty::Other),
    Field(4, "runAsUser", Ty::OptInt),
    Field(8, "runAsGroup", Ty::OptInt),
    Field(5, "runAsNonRoot", Ty::OptBool),
    Field(6, "readOnlyRootFilesystem", Ty::OptBool),
    Field(7, "allowPrivilegeEscalation", Ty::OptBool),
    Field(9, "procMount", Ty::OptStr),
    Field(11, "seccompProfile", Ty::Msg(SECCOMP_PROFILE)),
    Field(12, "appArmorProfile", Ty::Other),
];

/// core.v1.Container
const CONTAINER: &[Field] = &[
    Field(1, "name", Ty::Str),
    Field(2, "image", Ty::Str),
    Field(3, "command", Ty::Strs),
    Field(4, "args", Ty::Strs),
    Field(5, "workingDir", Ty::Str),
    Field(6, "ports", Ty::Msgs(CONTAINER_PORT)),
    Field(19, "envFrom", Ty::Other),
    Field(7, "env", Ty::Msgs(ENV_VAR)),
    Field(8, "resources", Ty::Msg(RESOURCE_REQUIREMENTS)),
    Field(23, "resizePolicy", Ty::Other),
    Field(24, "restartPolicy", Ty::Other),
    Field(9, "volumeMounts", Ty::Msgs(VOLUME_MOUNT)),
    Field(21, "volumeDevices", Ty::Other),
    Field(10, "livenessProbe", Ty::Msg(PROBE)),
    Field(11, "readinessProbe", Ty::Msg(PROBE)),
    Field(22, "startupProbe", Ty::Msg(PROBE)),
    Field(12, "lifecycle", Ty::Other),
    Field(13, "terminationMessagePath", Ty::Str),
    Field(20, "terminationMessagePolicy", Ty::Str),
    Field(14, "imagePullPolicy", Ty::Str),
    Field(15, "securityContext", Ty::Msg(SECURITY_CONTEXT)),
    Field(16, "stdin", Ty::Bool),
    Field(17, "stdinOnce", Ty::Bool),
    Field(18, "tty", Ty::Bool),
];

/// core.v1.Sysctl
const SYSCTL: &[Field] = &[Field(1, "name", Ty::Str), Field(2, "value", Ty::Str)];

/// core.v1.PodSecurityContext
const POD_SECURITY_CONTEXT: &[Field] = &[
    Field(1, "seLinuxOptions", Ty::Other),
    Field(8, "windowsOptions", Ty::Other),
    Field(2, "runAsUser", Ty::OptInt),
    Field(6, "runAsGroup", Ty::OptInt),
    Field(3, "runAsNonRoot", Ty::OptBool),
    Field(4, "supplementalGroups", Ty::Ints),
    Field(12, "supplementalGroupsPolicy", Ty::Other),
    Field(5, "fsGroup", Ty::OptInt),
    Field(7, "sysctls", Ty::Msgs(SYSCTL)),
    Field(9, "fsGroupChangePolicy", Ty::Other),
    Field(10, "seccompProfile", Ty::Msg(SECCOMP_PROFILE)),
    Field(11, "appArmorProfile", Ty::Other),
    Field(13, "seLinuxChangePolicy", Ty::Other),
];

/// core.v1.NodeSelectorRequirement
const NODE_SELECTOR_REQUIREMENT: &[Field] =
    &[Field(1, "key", Ty::Str), Field(2, "operator", Ty::Str), Field(3, "values", Ty::Strs)];

/// core.v1.NodeSelectorTerm
const NODE_SELECTOR_TERM: &[Field] = &[
    Field(1, "matchExpressions", Ty::Msgs(NODE_SELECTOR_REQUIREMENT)),
    Field(2, "matchFields", Ty::Msgs(NODE_SELECTOR_REQUIREMENT)),
];

/// core.v1.NodeSelector
const NODE_SELECTOR: &[Field] = &[Field(1, "nodeSelectorTerms", Ty::Msgs(NODE_SELECTOR_TERM))];

/// core.v1.PreferredSchedulingTerm
const PREFERRED_SCHEDULING_TERM: &[Field] =
    &[Field(1, "weight", Ty::Int), Field(2, "preference", Ty::Msg(NODE_SELECTOR_TERM))];

/// core.v1.NodeAffinity
const NODE_AFFINITY: &[Field] = &[
    Field(1, "requiredDuringSchedulingIgnoredDuringExecution", Ty::Msg(NODE_SELECTOR)),
    Field(
        2,
        "preferredDuringSchedulingIgnoredDuringExecution",
        Ty::Msgs(PREFERRED_SCHEDULING_TERM),
    ),
];

/// core.v1.Affinity
const AFFINITY: &[Field] = &[
    Field(1, "nodeAffinity", Ty::Msg(NODE_AFFINITY)),
    Field(2, "podAffinity", Ty::Other),
    Field(3, "podAntiAffinity", Ty::Other),
];

/// core.v1.Toleration
const TOLERATION: &[Field] = &[
    Field(1, "key", Ty::Str),
    Field(2, "operator", Ty::Str),
    Field(3, "value", Ty::Str),
    Field(4, "effect", Ty::Str),
    Field(5, "tolerationSeconds", Ty::OptInt),
];

/// core.v1.PodSpec
const POD_SPEC: &[Field] = &[
    Field(1, "volumes", Ty::Msgs(VOLUME)),
    Field(20, "initContainers", Ty::Msgs(CONTAINER)),
    Field(2, "containers", Ty::Msgs(CONTAINER)),
    Field(34, "ephemeralContainers", Ty::Other),
    Field(3, "restartPolicy", Ty::Str),
    Field(4, "terminationGracePeriodSeconds", Ty::OptInt),
    Field(5, "activeDeadlineSeconds", Ty::OptInt),
    Field(6, "dnsPolicy", Ty::Str),
    Field(7, "nodeSelector", Ty::StrMap),
    Field(8, "serviceAccountName", Ty::Str),
    Field(9, "serviceAccount", Ty::Other),
    Field(21, "automountServiceAccountToken", Ty::Other),
    Field(10, "nodeName", Ty::Str),
    Field(11, "hostNetwork", Ty::Bool),
    Field(12, "hostPID", Ty::Bool),
    Field(13, "hostIPC", Ty::Bool),
    Field(27, "shareProcessNamespace", Ty::Other),
    Field(14, "securityContext", Ty::Msg(POD_SECURITY_CONTEXT)),
    Field(15, "imagePullSecrets", Ty::Other),
    Field(16, "hostname", Ty::Str),
    Field(17, "subdomain", Ty::Str),
    Field(18, "affinity", Ty::Msg(AFFINITY)),
    Field(19, "schedulerName", Ty::Str),
    Field(22, "tolerations", Ty::Msgs(TOLERATION)),
    Field(23, "hostAliases", Ty::Other),
    Field(24, "priorityClassName", Ty::Str),
    Field(25, "priority", Ty::OptInt),
    Field(26, "dnsConfig", Ty::Other),
    Field(28, "readinessGates", Ty::Other),
    Field(29, "runtimeClassName", Ty::Other),
    Field(30, "enableServiceLinks", Ty::OptBool),
    Field(31, "preemptionPolicy", Ty::Other),
    Field(32, "overhead", Ty::Other),
    Field(33, "topologySpreadConstraints", Ty::Other),
    Field(35, "setHostnameAsFQDN", Ty::Other),
    Field(36, "os", Ty::Other),
    Field(37, "hostUsers", Ty::Other),
    Field(38, "schedulingGates", Ty::Other),
    Field(39, "resourceClaims", Ty::Other),
    Field(40, "resources", Ty::Other),
];

/// core.v1.PodCondition
const POD_CONDITION: &[Field] = &[
    Field(1, "type", Ty::Str),
    Field(2, "status", Ty::Str),
    Field(3, "lastProbeTime", Ty::Time),
    Field(4, "lastTransitionTime", Ty::Time),
    Field(5, "reason", Ty::Str),
    Field(6, "message", Ty::Str),
];

/// core.v1.HostIP
const HOST_IP: &[Field] = &[Field(1, "ip", Ty::Str)];

/// core.v1.PodIP
const POD_IP: &[Field] = &[Field(1, "ip", Ty::Str)];

/// core.v1.ContainerStateWaiting
const CONTAINER_STATE_WAITING: &[Field] =
    &[Field(1, "reason", Ty::Str), Field(2, "message", Ty::Str)];

/// core.v1.ContainerStateRunning
const CONTAINER_STATE_RUNNING: &[Field] = &[Field(1, "startedAt", Ty::Time)];

/// core.v1.ContainerStateTerminated
const CONTAINER_STATE_TERMINATED: &[Field] = &[
    Field(1, "exitCode", Ty::Int),
    Field(2, "signal", Ty::Int),
    Field(3, "reason", Ty::Str),
    Field(4, "message", Ty::Str),
    Field(5, "startedAt", Ty::Time),
    Field(6, "finishedAt", Ty::Time),
    Field(7, "containerID", Ty::Str),
];

/// core.v1.ContainerState
const CONTAINER_STATE: &[Field] = &[
    Field(1, "waiting", Ty::Msg(CONTAINER_STATE_WAITING)),
    Field(2, "running", Ty::Msg(CONTAINER_STATE_RUNNING)),
    Field(3, "terminated", Ty::Msg(CONTAINER_STATE_TERMINATED)),
];

/// core.v1.ContainerStatus
const CONTAINER_STATUS: &[Field] = &[
    Field(1, "name", Ty::Str),
    Field(2, "state", Ty::Msg(CONTAINER_STATE)),
    Field(3, "lastState", Ty::Msg(CONTAINER_STATE)),
    Field(4, "ready", Ty::Bool),
    Field(5, "restartCount", Ty::Int),
    Field(6, "image", Ty::Str),
    Field(7, "imageID", Ty::Str),
    Field(8, "containerID", Ty::Str),
    Field(9, "started", Ty::OptBool),
    Field(10, "allocatedResources", Ty::Other),
    Field(11, "resources", Ty::Other),
    Field(12, "volumeMounts", Ty::Other),
    Field(13, "user", Ty::Other),
    Field(14, "allocatedResourcesStatus", Ty::Other),
];

/// core.v1.PodStatus
const POD_STATUS: &[Field] = &[
    Field(1, "phase", Ty::Str),
    Field(2, "conditions", Ty::Msgs(POD_CONDITION)),
    Field(3, "message", Ty::Str),
    Field(4, "reason", Ty::Str),
    Field(11, "nominatedNodeName", Ty::Str),
    Field(5, "hostIP", Ty::Str),
    Field(16, "hostIPs", Ty::Msgs(HOST_IP)),
    Field(6, "podIP", Ty::Str),
    Field(12, "podIPs", Ty::Msgs(POD_IP)),
    Field(7, "startTime", Ty::Time),
    Field(10, "initContainerStatuses", Ty::Msgs(CONTAINER_STATUS)),
    Field(8, "containerStatuses", Ty::Msgs(CONTAINER_STATUS)),
    Field(9, "qosClass", Ty::Str),
    Field(13, "ephemeralContainerStatuses", Ty::Other),
    Field(14, "resize", Ty::Other),
    Field(15, "resourceClaimStatuses", Ty::Other),
];

/// core.v1.Pod
pub(super) const POD: &[Field] = &[
    Field(1, "metadata", Ty::Msg(OBJECT_META)),
    Field(2, "spec", Ty::Msg(POD_SPEC)),
    Field(3, "status", Ty::Msg(POD_STATUS)),
];

/// core.v1.ObjectReference
const OBJECT_REFERENCE: &[Field] = &[
    Field(1, "kind", Ty::Str),
    Field(2, "namespace", Ty::Str),
    Field(3, "name", Ty::Str),
    Field(4, "uid", Ty::Str),
    Field(5, "apiVersion", Ty::Str),
    Field(6, "resourceVersion", Ty::Str),
    Field(7, "fieldPath", Ty::Str),
];

/// core.v1.EventSource
const EVENT_SOURCE: &[Field] = &[Field(1, "component", Ty::Str), Field(2, "host", Ty::Str)];

/// core.v1.EventSeries
const EVENT_SERIES: &[Field] =
    &[Field(1, "count", Ty::Int), Field(2, "lastObservedTime", Ty::MicroTime)];

/// core.v1.Event
pub(super) const EVENT: &[Field] = &[
    Field(1, "metadata", Ty::Msg(OBJECT_META)),
    Field(2, "involvedObject", Ty::Msg(OBJECT_REFERENCE)),
    Field(3, "reason", Ty::Str),
    Field(4, "message", Ty::Str),
    Field(5, "source", Ty::Msg(EVENT_SOURCE)),
    Field(6, "firstTimestamp", Ty::Time),
    Field(7, "lastTimestamp", Ty::Time),
    Field(8, "count", Ty::Int),
    Field(9, "type", Ty::Str),
    Field(10, "eventTime", Ty::MicroTime),
    Field(11, "series", Ty::Msg(EVENT_SERIES)),
    Field(12, "action", Ty::Str),
    Field(13, "related", Ty::Msg(OBJECT_REFERENCE)),
    Field(14, "reportingComponent", Ty::Str),
    Field(15, "reportingInstance", Ty::Str),
];

/// core.v1.Binding
pub(super) const BINDING: &[Field] =
    &[Field(1, "metadata", Ty::Msg(OBJECT_META)), Field(2, "target", Ty::Msg(OBJECT_REFERENCE))];

/// meta.v1.LabelSelectorRequirement
const LABEL_SELECTOR_REQUIREMENT: &[Field] =
    &[Field(1, "key", Ty::Str), Field(2, "operator", Ty::Str), Field(3, "values", Ty::Strs)];

/// meta.v1.LabelSelector
const LABEL_SELECTOR: &[Field] = &[
    Field(1, "matchLabels", Ty::StrMap),
    Field(2, "matchExpressions", Ty::Msgs(LABEL_SELECTOR_REQUIREMENT)),
];

/// core.v1.PodTemplateSpec
const POD_TEMPLATE_SPEC: &[Field] =
    &[Field(1, "metadata", Ty::Msg(OBJECT_META)), Field(2, "spec", Ty::Msg(POD_SPEC))];

/// apps.v1.RollingUpdateDeployment
const ROLLING_UPDATE_DEPLOYMENT: &[Field] =
    &[Field(1, "maxUnavailable", Ty::IntOrString), Field(2, "maxSurge", Ty::IntOrString)];

/// apps.v1.DeploymentStrategy
const DEPLOYMENT_STRATEGY: &[Field] =
    &[Field(1, "type", Ty::Str), Field(2, "rollingUpdate", Ty::Msg(ROLLING_UPDATE_DEPLOYMENT))];

/// apps.v1.DeploymentSpec
const DEPLOYMENT_SPEC: &[Field] = &[
    Field(1, "replicas", Ty::OptInt),
    Field(2, "selector", Ty::Msg(LABEL_SELECTOR)),
    Field(3, "template", Ty::Msg(POD_TEMPLATE_SPEC)),
    Field(4, "strategy", Ty::Msg(DEPLOYMENT_STRATEGY)),
    Field(5, "minReadySeconds", Ty::Int),
    Field(6, "revisionHistoryLimit", Ty::OptInt),
    Field(7, "paused", Ty::Bool),
    Field(9, "progressDeadlineSeconds", Ty::OptInt),
];

/// apps.v1.DeploymentCondition
const DEPLOYMENT_CONDITION: &[Field] = &[
    Field(1, "type", Ty::Str),
    Field(2, "status", Ty::Str),
    Field(6, "lastUpdateTime", Ty::Time),
    Field(7, "lastTransitionTime", Ty::Time),
    Field(4, "reason", Ty::Str),
    Field(5, "message", Ty::Str),
];

/// apps.v1.DeploymentStatus
const DEPLOYMENT_STATUS: &[Field] = &[
    Field(1, "observedGeneration", Ty::Int),
    Field(2, "replicas", Ty::Int),
    Field(3, "updatedReplicas", Ty::Int),
    Field(7, "readyReplicas", Ty::Int),
    Field(4, "availableReplicas", Ty::Int),
    Field(5, "unavailableReplicas", Ty::Int),
    Field(6, "conditions", Ty::Msgs(DEPLOYMENT_CONDITION)),
    Field(8, "collisionCount", Ty::OptInt),
];

/// apps.v1.Deployment
pub(super) const DEPLOYMENT: &[Field] = &[
    Field(1, "metadata", Ty::Msg(OBJECT_META)),
    Field(2, "spec", Ty::Msg(DEPLOYMENT_SPEC)),
    Field(3, "status", Ty::Msg(DEPLOYMENT_STATUS)),
];

/// apps.v1.ReplicaSetSpec
const REPLICA_SET_SPEC: &[Field] = &[
    Field(1, "replicas", Ty::OptInt),
    Field(4, "minReadySeconds", Ty::Int),
    Field(2, "selector", Ty::Msg(LABEL_SELECTOR)),
    Field(3, "template", Ty::Msg(POD_TEMPLATE_SPEC)),
];

/// apps.v1.ReplicaSetCondition
const REPLICA_SET_CONDITION: &[Field] = &[
    Field(1, "type", Ty::Str),
    Field(2, "status", Ty::Str),
    Field(3, "lastTransitionTime", Ty::Time),
    Field(4, "reason", Ty::Str),
    Field(5, "message", Ty::Str),
];

/// apps.v1.ReplicaSetStatus
const REPLICA_SET_STATUS: &[Field] = &[
    Field(1, "replicas", Ty::Int),
    Field(2, "fullyLabeledReplicas", Ty::Int),
    Field(4, "readyReplicas", Ty::Int),
    Field(5, "availableReplicas", Ty::Int),
    Field(3, "observedGeneration", Ty::Int),
    Field(6, "conditions", Ty::Msgs(REPLICA_SET_CONDITION)),
];

/// apps.v1.ReplicaSet
pub(super) const REPLICA_SET: &[Field] = &[
    Field(1, "metadata", Ty::Msg(OBJECT_META)),
    Field(2, "spec", Ty::Msg(REPLICA_SET_SPEC)),
    Field(3, "status", Ty::Msg(REPLICA_SET_STATUS)),
];

/// coordination.v1.LeaseSpec
const LEASE_SPEC: &[Field] = &[
    Field(1, "holderIdentity", Ty::OptStr),
    Field(2, "leaseDurationSeconds", Ty::OptInt),
    Field(3, "acquireTime", Ty::MicroTime),
    Field(4, "renewTime", Ty::MicroTime),
    Field(5, "leaseTransitions", Ty::OptInt),
    Field(6, "strategy", Ty::Other),
    Field(7, "preferredHolder", Ty::Other),
];

/// coordination.v1.Lease
pub(super) const LEASE: &[Field] =
    &[Field(1, "metadata", Ty::Msg(OBJECT_META)), Field(2, "spec", Ty::Msg(LEASE_SPEC))];

/// autoscaling.v1.ScaleSpec
const SCALE_SPEC: &[Field] = &[Field(1, "replicas", Ty::OptInt)];

/// autoscaling.v1.ScaleStatus
const SCALE_STATUS: &[Field] = &[Field(1, "replicas", Ty::Int), Field(2, "selector", Ty::Str)];

/// autoscaling.v1.Scale
pub(super) const SCALE: &[Field] = &[
    Field(1, "metadata", Ty::Msg(OBJECT_META)),
    Field(2, "spec", Ty::Msg(SCALE_SPEC)),
    Field(3, "status", Ty::Msg(SCALE_STATUS)),
];

/// meta.v1.Preconditions
const PRECONDITIONS: &[Field] =
    &[Field(1, "uid", Ty::OptStr), Field(2, "resourceVersion", Ty::OptStr)];

/// meta.v1.DeleteOptions
pub(super) const DELETE_OPTIONS: &[Field] = &[
    Field(1, "gracePeriodSeconds", Ty::OptInt),
    Field(2, "preconditions", Ty::Msg(PRECONDITIONS)),
    Field(3, "orphanDependents", Ty::OptBool),
    Field(4, "propagationPolicy", Ty::OptStr),
    Field(5, "dryRun", Ty::Strs),
    Field(6, "ignoreStoreReadErrorWithClusterBreakingPotential", Ty::Other),
];

/// policy.v1.Eviction
pub(super) const EVICTION: &[Field] = &[
    Field(1, "metadata", Ty::Msg(OBJECT_META)),
    Field(2, "deleteOptions", Ty::Msg(DELETE_OPTIONS)),
];

/// rbac.v1.PolicyRule
const POLICY_RULE: &[Field] = &[
    Field(1, "verbs", Ty::Strs),
    Field(2, "apiGroups", Ty::Strs),
    Field(3, "resources", Ty::Strs),
    Field(4, "resourceNames", Ty::Strs),
    Field(5, "nonResourceURLs", Ty::Strs),
];

/// rbac.v1.Role
pub(super) const ROLE: &[Field] =
    &[Field(1, "metadata", Ty::Msg(OBJECT_META)), Field(2, "rules", Ty::Msgs(POLICY_RULE))];

/// rbac.v1.ClusterRole
pub(super) const CLUSTER_ROLE: &[Field] = &[
    Field(1, "metadata", Ty::Msg(OBJECT_META)),
    Field(2, "rules", Ty::Msgs(POLICY_RULE)),
    Field(3, "aggregationRule", Ty::Other),
];

/// rbac.v1.Subject
const SUBJECT: &[Field] = &[
    Field(1, "kind", Ty::Str),
    Field(2, "apiGroup", Ty::Str),
    Field(3, "name", Ty::Str),
    Field(4, "namespace", Ty::Str),
];

/// rbac.v1.RoleRef
const ROLE_REF: &[Field] =
    &[Field(1, "apiGroup", Ty::Str), Field(2, "kind", Ty::Str), Field(3, "name", Ty::Str)];

/// rbac.v1.RoleBinding
pub(super) const ROLE_BINDING: &[Field] = &[
    Field(1, "metadata", Ty::Msg(OBJECT_META)),
    Field(2, "subjects", Ty::Msgs(SUBJECT)),
    Field(3, "roleRef", Ty::Msg(ROLE_REF)),
];

/// rbac.v1.ClusterRoleBinding
pub(super) const CLUSTER_ROLE_BINDING: &[Field] = &[
    Field(1, "metadata", Ty::Msg(OBJECT_META)),
    Field(2, "subjects", Ty::Msgs(SUBJECT)),
    Field(3, "roleRef", Ty::Msg(ROLE_REF)),
];

/// authorization.v1.ResourceAttributes
const RESOURCE_ATTRIBUTES: &[Field] = &[
    Field(1, "namespace", Ty::Str),
    Field(2, "verb", Ty::Str),
    Field(3, "group", Ty::Str),
    Field(4, "version", Ty::Str),
    Field(5, "resource", Ty::Str),
    Field(6, "subresource", Ty::Str),
    Field(7, "name", Ty::Str),
    Field(8, "fieldSelector", Ty::Other),
    Field(9, "labelSelector", Ty::Other),
];

/// authorization.v1.NonResourceAttributes
const NON_RESOURCE_ATTRIBUTES: &[Field] = &[Field(1, "path", Ty::Str), Field(2, "verb", Ty::Str)];

/// authorization.v1.SelfSubjectAccessReviewSpec
const SELF_SUBJECT_ACCESS_REVIEW_SPEC: &[Field] = &[
    Field(1, "resourceAttributes", Ty::Msg(RESOURCE_ATTRIBUTES)),
    Field(2, "nonResourceAttributes", Ty::Msg(NON_RESOURCE_ATTRIBUTES)),
];

/// authorization.v1.SubjectAccessReviewStatus
const SUBJECT_ACCESS_REVIEW_STATUS: &[Field] = &[
    Field(1, "allowed", Ty::Bool),
    Field(4, "denied", Ty::Bool),
    Field(2, "reason", Ty::Str),
    Field(3, "evaluationError", Ty::Str),
];

/// authorization.v1.SelfSubjectAccessReview
pub(super) const SELF_SUBJECT_ACCESS_REVIEW: &[Field] = &[
    Field(1, "metadata", Ty::Msg(OBJECT_META)),
    Field(2, "spec", Ty::Msg(SELF_SUBJECT_ACCESS_REVIEW_SPEC)),
    Field(3, "status", Ty::Msg(SUBJECT_ACCESS_REVIEW_STATUS)),
];

/// authorization.v1.SelfSubjectRulesReviewSpec
const SELF_SUBJECT_RULES_REVIEW_SPEC: &[Field] = &[Field(1, "namespace", Ty::Str)];

/// authorization.v1.ResourceRule
const RESOURCE_RULE: &[Field] = &[
    Field(1, "verbs", Ty::Strs),
    Field(2, "apiGroups", Ty::Strs),
    Field(3, "resources", Ty::Strs),
    Field(4, "resourceNames", Ty::Strs),
];

/// authorization.v1.NonResourceRule
const NON_RESOURCE_RULE: &[Field] =
    &[Field(1, "verbs", Ty::Strs), Field(2, "nonResourceURLs", Ty::Strs)];

/// authorization.v1.SubjectRulesReviewStatus
const SUBJECT_RULES_REVIEW_STATUS: &[Field] = &[
    Field(1, "resourceRules", Ty::Msgs(RESOURCE_RULE)),
    Field(2, "nonResourceRules", Ty::Msgs(NON_RESOURCE_RULE)),
    Field(3, "incomplete", Ty::Bool),
    Field(4, "evaluationError", Ty::Str),
];

/// authorization.v1.SelfSubjectRulesReview
pub(super) const SELF_SUBJECT_RULES_REVIEW: &[Field] = &[
    Field(1, "metadata", Ty::Msg(OBJECT_META)),
    Field(2, "spec", Ty::Msg(SELF_SUBJECT_RULES_REVIEW_SPEC)),
    Field(3, "status", Ty::Msg(SUBJECT_RULES_REVIEW_STATUS)),
];
