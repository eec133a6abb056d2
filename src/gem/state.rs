//! The GEM state models of SEMI E30 the equipment keeps: communication (§5.1 of the reference)
//! and control (§5.2). Pure data and transition rules; [`super::Equipment`] applies them and
//! sends the messages they call for.

/// Communication state (E30 communications state model). The equipment keeps it, and so does
/// the host ([`super::Host`]), which is never DISABLED.
///
/// ENABLED holds NOT COMMUNICATING (with the equipment-initiated substates WAIT CRA and WAIT
/// DELAY, beside the host-initiated WAIT CR FROM HOST, which needs no state of its own) and
/// COMMUNICATING.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommunicationState {
    /// Communication switched off by the operator: nothing is sent or answered.
    Disabled,
    /// NOT COMMUNICATING / WAIT CRA: S1F13 sent (or to be sent once the link is up), waiting
    /// for S1F14.
    WaitCra,
    /// NOT COMMUNICATING / WAIT DELAY: the last S1F13 failed; the next one goes when the
    /// EstablishCommunicationsTimeout expires or the host sends anything.
    WaitDelay,
    /// COMMUNICATING: messages flow.
    Communicating,
}

impl CommunicationState {
    /// The CommunicationState SV: 1 DISABLED, 2 WAIT CRA, 3 WAIT DELAY, 4 COMMUNICATING.
    pub fn code(self) -> u8 {
        match self {
            CommunicationState::Disabled => 1,
            CommunicationState::WaitCra => 2,
            CommunicationState::WaitDelay => 3,
            CommunicationState::Communicating => 4,
        }
    }
}

/// Control state (E30 control state model), numbered as the ControlState SV reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlState {
    /// 1: OFF-LINE / EQUIPMENT OFF-LINE.
    EquipmentOffline = 1,
    /// 2: OFF-LINE / ATTEMPT ON-LINE (S1F1 sent, waiting for S1F2).
    AttemptOnline = 2,
    /// 3: OFF-LINE / HOST OFF-LINE.
    HostOffline = 3,
    /// 4: ON-LINE / LOCAL.
    OnlineLocal = 4,
    /// 5: ON-LINE / REMOTE.
    OnlineRemote = 5,
}

impl ControlState {
    /// The ControlState SV value (1..=5).
    pub fn code(self) -> u8 {
        self as u8
    }

    /// True in ON-LINE LOCAL and ON-LINE REMOTE.
    pub fn is_online(self) -> bool {
        matches!(self, ControlState::OnlineLocal | ControlState::OnlineRemote)
    }

    /// The ON-LINE substate the LOCAL/REMOTE switch selects (EC OnLineSubstate: 4 or 5).
    pub fn online(substate: u64) -> ControlState {
        if substate == 4 {
            ControlState::OnlineLocal
        } else {
            ControlState::OnlineRemote
        }
    }

    /// The OFF-LINE substate after a failed attempt to go on-line (EC OnLineFailed: 1 or 3).
    pub fn online_failed(setting: u64) -> ControlState {
        if setting == 1 {
            ControlState::EquipmentOffline
        } else {
            ControlState::HostOffline
        }
    }

    /// The state at power-up: EC InitControlState (1 OFF-LINE, 2 ON-LINE), then
    /// OffLineSubstate (1, 2, 3) or OnLineSubstate (4, 5).
    pub fn initial(init: u64, offline_substate: u64, online_substate: u64) -> ControlState {
        if init == 2 {
            return ControlState::online(online_substate);
        }
        match offline_substate {
            1 => ControlState::EquipmentOffline,
            2 => ControlState::AttemptOnline,
            _ => ControlState::HostOffline,
        }
    }

    /// ONLACK for S1F17 in this state: 0 accepted (HOST OFF-LINE), 1 not allowed, 2 already
    /// ON-LINE.
    pub fn onlack(self) -> u8 {
        match self {
            ControlState::HostOffline => 0,
            s if s.is_online() => 2,
            _ => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_up_and_acks() {
        assert_eq!(ControlState::initial(2, 1, 4), ControlState::OnlineLocal);
        assert_eq!(ControlState::initial(2, 1, 5), ControlState::OnlineRemote);
        assert_eq!(
            ControlState::initial(1, 1, 5),
            ControlState::EquipmentOffline
        );
        assert_eq!(ControlState::initial(1, 2, 5), ControlState::AttemptOnline);
        assert_eq!(ControlState::initial(1, 3, 5), ControlState::HostOffline);
        assert_eq!(ControlState::HostOffline.onlack(), 0);
        assert_eq!(ControlState::EquipmentOffline.onlack(), 1);
        assert_eq!(ControlState::OnlineRemote.onlack(), 2);
        assert_eq!(
            ControlState::online_failed(1),
            ControlState::EquipmentOffline
        );
        assert_eq!(ControlState::online_failed(3), ControlState::HostOffline);
    }
}
