
v1Nodel
node-1R 
kubernetes.io/hostnamenode-1R
kubernetes.io/oslinuxR%
topology.kubernetes.io/zonezone-a"u
10.244.1.0/2410.244.1.0/24 *6
 node.kubernetes.io/unschedulable
NoSchedule"Ãß»±*
	dedicatedgpu	NoExecute*Ï


cpu
8

ephemeral-storage
100Gi

memory
32Gi

nvidia.com/gpu
8

pods
110
cpu
7800m
ephemeral-storage
95Gi
memory
31Gi
nvidia.com/gpu
7
pods
110"L
ReadyTrueà®»±"†•»±*KubeletReady2kubelet is posting ready status"3
MemoryPressureFalse*KubeletHasSufficientMemory*

InternalIP	10.0.0.11*
Hostnamenode-12
äP:ƒ
 0f1e2d3c4b5a69788796a5b4c3d2e1f0$8a7b6c5d-4e3f-2a1b-0c9d-8e7f6a5b4c3d$1b2c3d4e-5f6a-7b8c-9d0e-1f2a3b4c5d6e"6.1.0-18-amd64*Debian GNU/Linux 12 (bookworm)2berth://0.1.0:v1.32.0JlinuxRamd64B%
docker.io/library/busybox:1.36ÆçÑ