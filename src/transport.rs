//! Which transport a connection runs on, HSMS (SEMI E37) or SECS-I (SEMI E4), and starting
//! it: both serve the same [`Link`](crate::link::Link), so everything above a link (the
//! gateway, its handlers, the message store, the simulator, `secsgate send`) works the same
//! over either.

use std::fmt;
use std::time::Duration;

use crate::hsms::driver::{self as hsms, Mode};
use crate::link::Endpoint;
use crate::peers::Allowlist;
use crate::secs1::driver::{self as secs1, Line};

/// The transport settings of one connection or simulator.
#[derive(Clone, Debug, PartialEq)]
pub enum Transport {
    Hsms(hsms::Settings),
    Secs1(secs1::Settings),
}

impl From<hsms::Settings> for Transport {
    fn from(settings: hsms::Settings) -> Self {
        Transport::Hsms(settings)
    }
}

impl From<secs1::Settings> for Transport {
    fn from(settings: secs1::Settings) -> Self {
        Transport::Secs1(settings)
    }
}

impl Transport {
    /// The name used in log lines.
    pub fn name(&self) -> &str {
        match self {
            Transport::Hsms(s) => &s.name,
            Transport::Secs1(s) => &s.name,
        }
    }

    pub fn set_name(&mut self, name: String) {
        match self {
            Transport::Hsms(s) => s.name = name,
            Transport::Secs1(s) => s.name = name,
        }
    }

    /// The peers this end accepts or keeps TCP connections with.
    pub fn allow(&self) -> &Allowlist {
        match self {
            Transport::Hsms(s) => &s.allow,
            Transport::Secs1(s) => &s.allow,
        }
    }

    pub fn set_allow(&mut self, allow: Allowlist) {
        match self {
            Transport::Hsms(s) => s.allow = allow,
            Transport::Secs1(s) => s.allow = allow,
        }
    }

    /// The device ID put on the messages this end sends.
    pub fn device_id(&self) -> u16 {
        match self {
            Transport::Hsms(s) => s.device_id,
            Transport::Secs1(s) => s.protocol.device_id,
        }
    }

    pub fn set_device_id(&mut self, device_id: u16) {
        match self {
            Transport::Hsms(s) => s.device_id = device_id,
            Transport::Secs1(s) => s.protocol.device_id = device_id,
        }
    }

    /// T3, the reply timeout of the primaries this end sends.
    pub fn t3(&self) -> Duration {
        match self {
            Transport::Hsms(s) => s.protocol.t3,
            Transport::Secs1(s) => s.protocol.t3,
        }
    }

    pub fn set_t3(&mut self, t3: Duration) {
        match self {
            Transport::Hsms(s) => s.protocol.t3 = t3,
            Transport::Secs1(s) => s.protocol.t3 = t3,
        }
    }

    /// The gap between connection attempts: HSMS T5; for SECS-I the first wait before the
    /// line is opened again.
    pub fn reconnect_gap(&self) -> Duration {
        match self {
            Transport::Hsms(s) => s.protocol.t5,
            Transport::Secs1(s) => s.reopen_min,
        }
    }

    /// `"HSMS"` or `"SECS-I"`.
    pub fn protocol_name(&self) -> &'static str {
        match self {
            Transport::Hsms(_) => "HSMS",
            Transport::Secs1(_) => "SECS-I",
        }
    }

    /// Starts the endpoint on the current tokio runtime. A listening socket is bound before
    /// this returns, so a port in use is reported here.
    pub async fn start(self) -> std::io::Result<Endpoint> {
        match self {
            Transport::Hsms(s) => hsms::start(s).await,
            Transport::Secs1(s) => secs1::start(s).await,
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transport::Hsms(s) => match &s.mode {
                Mode::Active(a) => write!(f, "HSMS active to {a}"),
                Mode::Passive(a) => write!(f, "HSMS passive on {a}"),
                Mode::Alternating { connect, listen } => {
                    write!(f, "HSMS alternating to {connect} / on {listen}")
                }
            },
            Transport::Secs1(s) => match &s.line {
                Line::Serial(serial) => write!(f, "SECS-I serial {serial}"),
                Line::TcpConnect(a) => write!(f, "SECS-I over TCP to {a}"),
                Line::TcpListen(a) => write!(f, "SECS-I over TCP on {a}"),
            },
        }
    }
}
