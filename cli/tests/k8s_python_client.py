"""The Python kubernetes client against a berth peer's REST API: create,
list, patch, watch with resourceVersion resume, delete and deletecollection.

Usage: k8s_python_client.py http://HOST:PORT
"""
import sys

from kubernetes import client, watch


def main(server):
    config = client.Configuration()
    config.host = server
    api = client.ApiClient(config)
    core = client.CoreV1Api(api)

    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="py")))

    def pod(name):
        return client.V1Pod(
            metadata=client.V1ObjectMeta(name=name, labels={"app": "py"}),
            spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")]),
        )

    core.create_namespaced_pod("py", pod("p1"))
    listed = core.list_namespaced_pod("py")
    assert [p.metadata.name for p in listed.items] == ["p1"], listed.items
    version = listed.metadata.resource_version

    patched = core.patch_namespaced_pod("p1", "py", {"metadata": {"labels": {"step": "one"}}})
    assert patched.metadata.labels == {"app": "py", "step": "one"}, patched.metadata.labels

    # Watch from the list's version: the patch is there.
    seen = []
    for event in watch.Watch().stream(core.list_namespaced_pod, "py", resource_version=version, timeout_seconds=2):
        seen.append((event["type"], event["object"].metadata.name, event["object"].metadata.labels.get("step")))
        version = event["object"].metadata.resource_version
        break
    assert seen == [("MODIFIED", "p1", "one")], seen

    # Resume from the last event seen: only what came after.
    core.create_namespaced_pod("py", pod("p2"))
    resumed = []
    for event in watch.Watch().stream(core.list_namespaced_pod, "py", resource_version=version, timeout_seconds=2):
        resumed.append((event["type"], event["object"].metadata.name))
        break
    assert resumed == [("ADDED", "p2")], resumed

    core.delete_namespaced_pod("p1", "py", grace_period_seconds=0)
    names = [p.metadata.name for p in core.list_namespaced_pod("py").items]
    assert names == ["p2"], names
    core.delete_collection_namespaced_pod("py", label_selector="app=py")
    assert core.list_namespaced_pod("py").items == []

    try:
        core.read_namespaced_pod("p2", "py")
        raise AssertionError("a deleted pod was read")
    except client.exceptions.ApiException as e:
        assert e.status == 404, e.status
    print("ok")


if __name__ == "__main__":
    main(sys.argv[1])
