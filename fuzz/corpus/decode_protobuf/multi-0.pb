
v1	Namespace
shop