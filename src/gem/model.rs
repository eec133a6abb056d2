//! The equipment model (SEMI E30): what a GEM tool holds and the host can read or configure.
//!
//! - Variables (VIDs): status variables (SV, read by S1F3) and data values (DV, valid when an
//!   event occurs); both can appear in reports.
//! - Equipment constants (ECs, S2F13/S2F15) with min, max and default.
//! - Collection events (CEIDs), reports (RPTIDs) and their links (S2F33/S2F35/S2F37).
//! - Alarms (ALIDs, stream 5), remote commands (S2F41/S2F49), echo replies for extra
//!   messages.
//!
//! [`Model::new`] starts with the standard GEM objects ([`Standard`]): Clock, ControlState,
//! the spool variables, the control and spooling ECs, the control-state events and so on, at
//! default IDs that [`Model::move_standard`] can change. SVs, DVs and ECs share one ID space
//! (a report may name any of them).

use std::collections::{BTreeMap, BTreeSet};

use crate::secs2::{Format, Item, StreamFunction};

/// A GEM ID (SVID, VID, ECID, CEID, RPTID, ALID, TRID, DATAID). This equipment sends IDs as
/// `U4` and accepts any integer format (or digits in ASCII) on receipt.
pub type Id = u32;

/// What kind of object a standard GEM object is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Status variable (SV).
    Status,
    /// Data value (DV).
    Data,
    /// Equipment constant (EC).
    Constant,
    /// Collection event (CE).
    Event,
}

macro_rules! standard {
    ($( $variant:ident = $name:literal, $kind:ident, $id:literal; )*) => {
        /// The standard GEM objects every simulated tool has (E30 App. A names).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Standard { $( $variant, )* }

        impl Standard {
            /// Every standard object, in declaration order.
            pub const ALL: &'static [Standard] = &[ $( Standard::$variant, )* ];

            /// The E30 name, as written in config files (`Clock`, `ControlState`...).
            pub const fn name(self) -> &'static str {
                match self { $( Standard::$variant => $name, )* }
            }

            /// SV, DV, EC or CE.
            pub const fn kind(self) -> Kind {
                match self { $( Standard::$variant => Kind::$kind, )* }
            }

            /// Its ID unless the configuration moves it.
            pub const fn default_id(self) -> Id {
                match self { $( Standard::$variant => $id, )* }
            }
        }
    };
}

standard! {
    Clock = "Clock", Status, 2001;
    ControlState = "ControlState", Status, 2002;
    PreviousControlState = "PreviousControlState", Status, 2003;
    EventsEnabled = "EventsEnabled", Status, 2004;
    AlarmsEnabled = "AlarmsEnabled", Status, 2005;
    AlarmsSet = "AlarmsSet", Status, 2006;
    Mdln = "MDLN", Status, 2007;
    Softrev = "SOFTREV", Status, 2008;
    PpExecName = "PPExecName", Status, 2009;
    ProcessState = "ProcessState", Status, 2010;
    PreviousProcessState = "PreviousProcessState", Status, 2011;
    CommunicationState = "CommunicationState", Status, 2012;
    SpoolCountActual = "SpoolCountActual", Status, 2013;
    SpoolCountTotal = "SpoolCountTotal", Status, 2014;
    SpoolFullTime = "SpoolFullTime", Status, 2015;
    SpoolStartTime = "SpoolStartTime", Status, 2016;
    SpoolState = "SpoolState", Status, 2017;
    AlarmId = "AlarmID", Data, 2101;
    PpChangeName = "PPChangeName", Data, 2102;
    PpChangeStatus = "PPChangeStatus", Data, 2103;
    LimitVariable = "LimitVariable", Data, 2104;
    EventLimit = "EventLimit", Data, 2105;
    TransitionType = "TransitionType", Data, 2106;
    EstablishCommunicationsTimeout = "EstablishCommunicationsTimeout", Constant, 2201;
    InitCommState = "InitCommState", Constant, 2202;
    InitControlState = "InitControlState", Constant, 2203;
    OffLineSubstate = "OffLineSubstate", Constant, 2204;
    OnLineFailed = "OnLineFailed", Constant, 2205;
    OnLineSubstate = "OnLineSubstate", Constant, 2206;
    TimeFormat = "TimeFormat", Constant, 2207;
    EnableSpooling = "EnableSpooling", Constant, 2208;
    OverWriteSpool = "OverWriteSpool", Constant, 2209;
    MaxSpoolTransmit = "MaxSpoolTransmit", Constant, 2210;
    EquipmentOffline = "EquipmentOffline", Event, 2301;
    ControlStateLocal = "ControlStateLocal", Event, 2302;
    ControlStateRemote = "ControlStateRemote", Event, 2303;
    ProcessProgramChange = "ProcessProgramChange", Event, 2304;
    SpoolingActivated = "SpoolingActivated", Event, 2305;
    SpoolingDeactivated = "SpoolingDeactivated", Event, 2306;
    SpoolTransmitFailure = "SpoolTransmitFailure", Event, 2307;
}

impl Standard {
    /// The standard object of this name (case-insensitive).
    pub fn from_name(name: &str) -> Option<Standard> {
        Standard::ALL
            .iter()
            .copied()
            .find(|s| s.name().eq_ignore_ascii_case(name))
    }

    /// Units shown by S1F11/S2F29.
    fn units(self) -> &'static str {
        match self {
            Standard::EstablishCommunicationsTimeout => "s",
            _ => "",
        }
    }

    /// The initial value of a stored (not computed) standard variable or constant, with the
    /// range of a constant: (value, min, max).
    fn initial(self) -> (Item, Option<Item>, Option<Item>) {
        let u1 = |v: u8| Item::U1(vec![v]);
        let range = |v: u8, lo: u8, hi: u8| (u1(v), Some(u1(lo)), Some(u1(hi)));
        match self {
            Standard::PpExecName | Standard::PpChangeName => (Item::ascii(""), None, None),
            Standard::ProcessState | Standard::PreviousProcessState => (u1(1), None, None),
            Standard::PpChangeStatus
            | Standard::EventLimit
            | Standard::TransitionType
            | Standard::CommunicationState => (u1(0), None, None),
            Standard::AlarmId | Standard::LimitVariable => (Item::U4(vec![0]), None, None),
            Standard::EstablishCommunicationsTimeout => (
                Item::U2(vec![10]),
                Some(Item::U2(vec![1])),
                Some(Item::U2(vec![32000])),
            ),
            Standard::InitCommState => range(2, 1, 2),
            Standard::InitControlState => range(2, 1, 2),
            Standard::OffLineSubstate => range(3, 1, 3),
            Standard::OnLineFailed => range(3, 1, 3),
            Standard::OnLineSubstate => range(5, 4, 5),
            Standard::TimeFormat => range(1, 0, 2),
            Standard::EnableSpooling => (Item::boolean(true), None, None),
            Standard::OverWriteSpool => (Item::boolean(false), None, None),
            Standard::MaxSpoolTransmit => (
                Item::U4(vec![0]),
                Some(Item::U4(vec![0])),
                Some(Item::U4(vec![u32::MAX])),
            ),
            // Computed when read; this value is never used.
            _ => (Item::L(Vec::new()), None, None),
        }
    }

    /// Data values set when this standard event fires.
    fn data_variables(self) -> &'static [Standard] {
        match self {
            Standard::ProcessProgramChange => &[Standard::PpChangeName, Standard::PpChangeStatus],
            _ => &[],
        }
    }
}

/// Whether a variable is a status variable or a data value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VariableClass {
    /// SV: always valid, read with S1F3.
    Status,
    /// DV: valid when an event that names it occurs; listed by S1F21.
    Data,
}

/// A status variable or data value.
#[derive(Clone, Debug, PartialEq)]
pub struct Variable {
    pub id: Id,
    pub name: String,
    pub units: String,
    pub class: VariableClass,
    /// The current value (ignored for standard variables the engine computes).
    pub value: Item,
    /// Set for the standard GEM variables.
    pub standard: Option<Standard>,
    /// Limits-monitoring capability (S2F45/S2F47), if the variable has it.
    pub limits: Option<LimitCapability>,
    /// Events fired when the value changes.
    pub triggers: Vec<Trigger>,
}

/// What limits monitoring may do with a variable: the range its limits must lie in, the
/// event fired when the value crosses one of them, and how many limits it can hold.
#[derive(Clone, Debug, PartialEq)]
pub struct LimitCapability {
    /// LIMITMIN.
    pub min: f64,
    /// LIMITMAX.
    pub max: f64,
    /// CEID fired on every limit crossing (with LimitVariable, EventLimit, TransitionType).
    pub event: Id,
    /// Number of limits (LIMITID 1..=count).
    pub count: u8,
}

/// Fire `event` when the variable changes (to `value`, if given).
#[derive(Clone, Debug, PartialEq)]
pub struct Trigger {
    pub event: Id,
    pub value: Option<Item>,
}

/// An equipment constant.
#[derive(Clone, Debug, PartialEq)]
pub struct Constant {
    pub id: Id,
    pub name: String,
    pub units: String,
    pub value: Item,
    pub default: Item,
    pub min: Option<Item>,
    pub max: Option<Item>,
    pub standard: Option<Standard>,
}

/// A collection event.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub id: Id,
    pub name: String,
    /// The DVs valid for this event (S1F24).
    pub data_variables: Vec<Id>,
    pub standard: Option<Standard>,
}

/// An alarm. ALCD is `category`, with bit 8 set while the alarm is set.
#[derive(Clone, Debug, PartialEq)]
pub struct Alarm {
    pub id: Id,
    pub name: String,
    /// ALTX, at most 120 characters.
    pub text: String,
    /// ALCD category, 1..=127 (1 personal safety ... 8 data integrity).
    pub category: u8,
    pub set_event: Option<Id>,
    pub clear_event: Option<Id>,
}

/// A remote command (RCMD) the host may send with S2F41 or S2F49.
#[derive(Clone, Debug, PartialEq)]
pub struct RemoteCommand {
    pub name: String,
    pub parameters: Vec<Parameter>,
    /// HCACK when the command is accepted: 0 (performed) or 4 (completion signalled later).
    pub ack: u8,
    /// Event fired once the command is accepted.
    pub event: Option<Id>,
    /// Simulator event run started by the command.
    pub run: Option<String>,
}

/// A command parameter (CPNAME) and what values it takes.
#[derive(Clone, Debug, PartialEq)]
pub struct Parameter {
    pub name: String,
    /// Required format of CPVAL (any when `None`).
    pub format: Option<Format>,
    /// Allowed values (any when empty).
    pub values: Vec<Item>,
}

/// Sizes the equipment accepts.
#[derive(Clone, Debug, PartialEq)]
pub struct Capacities {
    /// Messages the spool holds (E30 spool full beyond this).
    pub spool: usize,
    /// Traces running at once (S2F23 TIAACK 2 beyond this).
    pub traces: usize,
    /// SVIDs in one trace (TIAACK 1 beyond this).
    pub trace_variables: usize,
    /// Reports defined (DRACK 1 beyond this).
    pub reports: usize,
    /// Largest process program in bytes (PPGNT 2, ACKC7 2 beyond this).
    pub process_program: usize,
    /// Most process programs stored (PPGNT 2, ACKC7 3 for one more).
    pub process_programs: usize,
    /// Most bytes of process programs stored in all (PPGNT 2, ACKC7 3 past this).
    pub process_program_bytes: u64,
}

impl Default for Capacities {
    fn default() -> Self {
        Capacities {
            spool: 10_000,
            traces: 16,
            trace_variables: 256,
            reports: 1000,
            process_program: 4 * 1024 * 1024,
            process_programs: 1000,
            process_program_bytes: 64 * 1024 * 1024,
        }
    }
}

/// A model could not be built as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("ID {id} is already used by {existing}; pick another ID")]
    DuplicateId { id: Id, existing: String },
    #[error("remote command '{0}' is defined twice")]
    DuplicateCommand(String),
    #[error("'{0}' is not a standard GEM object (known: {known})", known = standard_names())]
    UnknownStandard(String),
}

fn standard_names() -> String {
    Standard::ALL
        .iter()
        .map(|s| s.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Everything the equipment holds, as configured at start-up.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    /// MDLN: equipment model type (S1F2, S1F13/14), at most 20 characters.
    pub mdln: String,
    /// SOFTREV: software revision, at most 20 characters.
    pub softrev: String,
    /// Device ID this equipment answers to (S9F1 for others).
    pub device_id: u16,
    pub variables: BTreeMap<Id, Variable>,
    pub constants: BTreeMap<Id, Constant>,
    pub events: BTreeMap<Id, Event>,
    /// Reports defined at start-up: RPTID -> VIDs.
    pub reports: BTreeMap<Id, Vec<Id>>,
    /// Event links at start-up: CEID -> RPTIDs.
    pub links: BTreeMap<Id, Vec<Id>>,
    /// Events enabled at start-up.
    pub enabled_events: BTreeSet<Id>,
    pub alarms: BTreeMap<Id, Alarm>,
    /// Alarms enabled at start-up.
    pub enabled_alarms: BTreeSet<Id>,
    pub remote_commands: BTreeMap<String, RemoteCommand>,
    /// Hard-coded replies for extra primaries: request S/F -> reply body.
    pub echoes: BTreeMap<StreamFunction, Option<Item>>,
    /// Hard-coded replies by SDL definition: the name of the definition a primary matched ->
    /// reply body. They take precedence over the GEM engine's own answer.
    pub named_echoes: BTreeMap<String, Option<Item>>,
    /// The SDL a received primary is matched against first (its named definitions, remote
    /// commands, and the stream 9 or HCACK answers when none matches), for the S/Fs it
    /// defines.
    pub sdl: Option<std::sync::Arc<crate::sdl::Sdl>>,
    /// Streams spooled at start-up (S2F43 form): stream -> functions, empty = all.
    pub spool_streams: BTreeMap<u8, BTreeSet<u8>>,
    pub capacities: Capacities,
    standard_ids: Vec<Id>,
}

impl Model {
    /// A model holding only the standard GEM objects at their default IDs.
    pub fn new(mdln: &str, softrev: &str) -> Model {
        let mut model = Model {
            mdln: mdln.into(),
            softrev: softrev.into(),
            device_id: 0,
            variables: BTreeMap::new(),
            constants: BTreeMap::new(),
            events: BTreeMap::new(),
            reports: BTreeMap::new(),
            links: BTreeMap::new(),
            enabled_events: BTreeSet::new(),
            alarms: BTreeMap::new(),
            enabled_alarms: BTreeSet::new(),
            remote_commands: BTreeMap::new(),
            echoes: BTreeMap::new(),
            named_echoes: BTreeMap::new(),
            sdl: None,
            spool_streams: BTreeMap::new(),
            capacities: Capacities::default(),
            standard_ids: Standard::ALL.iter().map(|s| s.default_id()).collect(),
        };
        for &s in Standard::ALL {
            model.insert_standard(s, s.default_id());
        }
        model
    }

    fn insert_standard(&mut self, s: Standard, id: Id) {
        let (value, min, max) = s.initial();
        let name = s.name().to_string();
        let units = s.units().to_string();
        match s.kind() {
            Kind::Status | Kind::Data => {
                self.variables.insert(
                    id,
                    Variable {
                        id,
                        name,
                        units,
                        class: if s.kind() == Kind::Status {
                            VariableClass::Status
                        } else {
                            VariableClass::Data
                        },
                        value,
                        standard: Some(s),
                        limits: None,
                        triggers: Vec::new(),
                    },
                );
            }
            Kind::Constant => {
                self.constants.insert(
                    id,
                    Constant {
                        id,
                        name,
                        units,
                        default: value.clone(),
                        value,
                        min,
                        max,
                        standard: Some(s),
                    },
                );
            }
            Kind::Event => {
                let data_variables = s.data_variables().iter().map(|d| self.id(*d)).collect();
                self.events.insert(
                    id,
                    Event {
                        id,
                        name,
                        data_variables,
                        standard: Some(s),
                    },
                );
            }
        }
    }

    /// The ID of a standard object.
    pub fn id(&self, s: Standard) -> Id {
        self.standard_ids[s as usize]
    }

    /// Gives a standard object another ID. Call it before adding the configured objects.
    pub fn move_standard(&mut self, s: Standard, id: Id) -> Result<(), ModelError> {
        let old = self.id(s);
        if old == id {
            return Ok(());
        }
        let taken = match s.kind() {
            Kind::Event => self.events.get(&id).map(|e| e.name.clone()),
            _ => self.vid_owner(id),
        };
        if let Some(existing) = taken {
            return Err(ModelError::DuplicateId { id, existing });
        }
        match s.kind() {
            Kind::Status | Kind::Data => {
                self.variables.remove(&old);
            }
            Kind::Constant => {
                self.constants.remove(&old);
            }
            Kind::Event => {
                self.events.remove(&old);
            }
        }
        self.standard_ids[s as usize] = id;
        self.insert_standard(s, id);
        // Events naming a moved DV follow it.
        if s.kind() == Kind::Data {
            for event in self.events.values_mut() {
                for dv in &mut event.data_variables {
                    if *dv == old {
                        *dv = id;
                    }
                }
            }
        }
        Ok(())
    }

    /// Sets the initial value of a standard EC (config `[equipment]` settings).
    pub fn set_standard_constant(&mut self, s: Standard, value: Item) {
        let id = self.id(s);
        if let Some(c) = self.constants.get_mut(&id) {
            c.default = value.clone();
            c.value = value;
        }
    }

    /// What holds VID `id` ("status variable 7 'Temperature'"), if anything.
    pub fn vid_owner(&self, id: Id) -> Option<String> {
        if let Some(v) = self.variables.get(&id) {
            let what = match v.class {
                VariableClass::Status => "status variable",
                VariableClass::Data => "data value",
            };
            return Some(format!("{what} {id} '{}'", v.name));
        }
        self.constants
            .get(&id)
            .map(|c| format!("equipment constant {id} '{}'", c.name))
    }

    /// Whether `id` names an SV, DV or EC.
    pub fn has_vid(&self, id: Id) -> bool {
        self.variables.contains_key(&id) || self.constants.contains_key(&id)
    }

    /// Adds an SV or DV.
    pub fn add_variable(&mut self, v: Variable) -> Result<(), ModelError> {
        self.free_vid(v.id)?;
        self.variables.insert(v.id, v);
        Ok(())
    }

    /// Adds an EC.
    pub fn add_constant(&mut self, c: Constant) -> Result<(), ModelError> {
        self.free_vid(c.id)?;
        self.constants.insert(c.id, c);
        Ok(())
    }

    fn free_vid(&self, id: Id) -> Result<(), ModelError> {
        match self.vid_owner(id) {
            Some(existing) => Err(ModelError::DuplicateId { id, existing }),
            None => Ok(()),
        }
    }

    /// Adds a collection event.
    pub fn add_event(&mut self, e: Event) -> Result<(), ModelError> {
        if let Some(old) = self.events.get(&e.id) {
            return Err(ModelError::DuplicateId {
                id: e.id,
                existing: format!("collection event {} '{}'", e.id, old.name),
            });
        }
        self.events.insert(e.id, e);
        Ok(())
    }

    /// Defines a report at start-up.
    pub fn add_report(&mut self, id: Id, vids: Vec<Id>) -> Result<(), ModelError> {
        if self.reports.contains_key(&id) {
            return Err(ModelError::DuplicateId {
                id,
                existing: format!("report {id}"),
            });
        }
        self.reports.insert(id, vids);
        Ok(())
    }

    /// Adds an alarm.
    pub fn add_alarm(&mut self, a: Alarm) -> Result<(), ModelError> {
        if let Some(old) = self.alarms.get(&a.id) {
            return Err(ModelError::DuplicateId {
                id: a.id,
                existing: format!("alarm {} '{}'", a.id, old.name),
            });
        }
        self.alarms.insert(a.id, a);
        Ok(())
    }

    /// Adds a remote command.
    pub fn add_remote_command(&mut self, c: RemoteCommand) -> Result<(), ModelError> {
        if self.remote_commands.contains_key(&c.name) {
            return Err(ModelError::DuplicateCommand(c.name));
        }
        self.remote_commands.insert(c.name.clone(), c);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_objects_exist_and_move() {
        let mut m = Model::new("SIM", "1");
        assert!(m.variables.contains_key(&2001));
        assert!(m.constants.contains_key(&2207));
        assert!(m.events.contains_key(&2304));
        assert_eq!(m.events[&2304].data_variables, vec![2102, 2103]);
        m.move_standard(Standard::PpChangeName, 5).unwrap();
        assert_eq!(m.events[&2304].data_variables, vec![5, 2103]);
        assert_eq!(m.id(Standard::PpChangeName), 5);
        assert!(matches!(
            m.move_standard(Standard::Clock, 2002),
            Err(ModelError::DuplicateId { id: 2002, .. })
        ));
        assert_eq!(Standard::from_name("clock"), Some(Standard::Clock));
    }
}
