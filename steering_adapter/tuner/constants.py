"""Names the steering method is known by in PEFT (method name, ``PeftType`` member, parameter prefix)."""

METHOD_NAME = "steering"
PEFT_TYPE_NAME = "STEERING"
PREFIX = "steering_"
