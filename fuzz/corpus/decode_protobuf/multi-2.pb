
v1Event
hello.17c8a2b3shop"8
Podshophello"$3f1c2a9e-5b7d-4e1f-9a2b-8c7d6e5f4a3b*	Scheduled2*Successfully assigned shop/hello to node-1:
berth-schedulerB ¥È±J ¥È±PZNormalb ¥È±€åšw‚berth-schedulerŠberth-scheduler-host-a