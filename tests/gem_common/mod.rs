//! Shared by the GEM tests: a small equipment config exercising every capability.

#![allow(dead_code)]

/// A test equipment: limits on SV 1, a trigger on SV 2, spooling of stream 6 with room for
/// three messages, a remote command that starts an event run, an echo for S10F3.
pub const TEST_CONFIG: &str = r#"
[equipment]
mdln = "TESTER"
softrev = "9.9"
control_state = "online-remote"
spool = [6]
spool_capacity = 3
establish_communications_timeout = 1
max_process_program_size = 100

[[status_variable]]
id = 1
name = "Temp"
units = "C"
format = "F4"
value = 20.0
limits = { min = 0, max = 100, event = 30, count = 2 }

[[status_variable]]
id = 2
name = "Count"
format = "U4"
value = 0
triggers = [{ event = 31, value = 5 }]

[[status_variable]]
id = 3
name = "Lot"
format = "A"
value = "L1"

[[data_variable]]
id = 10
name = "Wafer"
format = "A"
value = "W1"

[[equipment_constant]]
id = 20
name = "MaxTemp"
units = "C"
format = "F4"
value = 80.0
min = 0.0
max = 150.0

[[equipment_constant]]
id = 21
name = "Name"
format = "A"
value = "T1"

[[collection_event]]
id = 30
name = "LimitCrossed"
data_variables = [2104, 2105, 2106]

[[collection_event]]
id = 31
name = "CountFive"

[[collection_event]]
id = 32
name = "Started"
data_variables = [10]

[[collection_event]]
id = 33
name = "HotSet"

[[report]]
id = 100
variables = [1, 3]

[[alarm]]
id = 1
name = "Hot"
text = "too hot"
category = 2
set_event = 33

[[alarm]]
id = 2
name = "Door"
text = "door open"
category = 7
enabled = true

[[remote_command]]
name = "START"
ack = 4
event = 32
run = "go"
parameters = [{ name = "LOTID", format = "A" }, { name = "MODE", format = "U1", values = [1, 2] }]

[[remote_command]]
name = "STOP"

[[echo]]
request = "S10F3"
reply = "<B 0>"

[[event_run]]
name = "go"

[[event_run.step]]
event = 32

[[event_run]]
name = "burst"
repeat = 5

[[event_run.step]]
delay = "20ms"
event = 32
"#;
