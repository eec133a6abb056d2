//! Remote control (E30): S2F41 Host Command Send and S2F49 Enhanced Remote Command. Both are
//! answered with HCACK and the parameters in error: 1 no such command, 2 cannot perform now
//! (ON-LINE LOCAL), 3 a parameter is invalid (CPACK/CEPACK 1 no such CPNAME, 2 value not
//! allowed, 3 wrong format); an accepted command gets its configured HCACK (0 performed or 4
//! completion signalled later by an event).

use std::time::Instant;

use super::equipment::{Action, Equipment};
use super::items::{Illegal, Parsed, ack, l, list, list_of, required};
use super::model::Parameter;
use super::state::ControlState;
use crate::secs2::Item;

/// HCACK (S2F42, S2F50).
mod hcack {
    pub const NO_SUCH_COMMAND: u8 = 1;
    pub const CANNOT_NOW: u8 = 2;
    pub const BAD_PARAMETER: u8 = 3;
}

/// CPACK/CEPACK.
mod cpack {
    pub const NO_SUCH_NAME: u8 = 1;
    pub const BAD_VALUE: u8 = 2;
    pub const BAD_FORMAT: u8 = 3;
}

/// RCMD and CPNAME are text (A) or, on some tools, integers.
fn name_of(item: &Item) -> Parsed<String> {
    if let Some(t) = item.as_text() {
        return Ok(t);
    }
    item.as_int().map(|v| v.to_string()).ok_or(Illegal)
}

/// CPACK for one value of a parameter, `None` if it is acceptable.
fn check(spec: &Parameter, value: &Item) -> Option<u8> {
    if spec.format.is_some_and(|f| f != value.format()) {
        return Some(cpack::BAD_FORMAT);
    }
    if !spec.values.is_empty() && !spec.values.contains(value) {
        return Some(cpack::BAD_VALUE);
    }
    None
}

impl Equipment {
    /// Checks and carries out a remote command; returns
    /// `<L[2] <B HCACK> <L[n] <L[2] CPNAME <B CPACK>>…>>` (the S2F42 and S2F50 shape).
    fn remote_command(&mut self, rcmd: &Item, parameters: &[Item], now: Instant) -> Parsed<Item> {
        let name = name_of(rcmd)?;
        let mut given = Vec::with_capacity(parameters.len());
        for p in parameters {
            let [cpname, value] = list_of(p, 2)? else {
                return Err(Illegal);
            };
            given.push((cpname, name_of(cpname)?, value));
        }
        let reply = |code: u8, errors: Vec<Item>| l(vec![ack(code), l(errors)]);
        let Some(command) = self.model.remote_commands.get(&name).cloned() else {
            return Ok(reply(hcack::NO_SUCH_COMMAND, Vec::new()));
        };
        if self.control == ControlState::OnlineLocal {
            return Ok(reply(hcack::CANNOT_NOW, Vec::new()));
        }
        let errors: Vec<Item> = given
            .iter()
            .filter_map(|(echo, cpname, value)| {
                let code = match command.parameters.iter().find(|s| s.name == *cpname) {
                    None => Some(cpack::NO_SUCH_NAME),
                    Some(spec) => check(spec, value),
                };
                code.map(|c| l(vec![(*echo).clone(), ack(c)]))
            })
            .collect();
        if !errors.is_empty() {
            return Ok(reply(hcack::BAD_PARAMETER, errors));
        }
        self.actions_push(Action::RemoteCommand {
            name: command.name.clone(),
            parameters: given.into_iter().map(|(_, n, v)| (n, v.clone())).collect(),
            run: command.run.clone(),
        });
        if let Some(ceid) = command.event {
            self.fire(ceid, now);
        }
        Ok(reply(command.ack, Vec::new()))
    }

    /// S2F41 Host Command Send `<L[2] RCMD <L[n] <L[2] CPNAME CPVAL>…>>` -> S2F42.
    pub(super) fn s2f41_remote_command(
        &mut self,
        body: Option<&Item>,
        now: Instant,
    ) -> Parsed<Option<Item>> {
        let [rcmd, parameters] = list_of(required(body)?, 2)? else {
            return Err(Illegal);
        };
        let parameters = list(parameters)?;
        self.remote_command(rcmd, parameters, now).map(Some)
    }

    /// S2F49 Enhanced Remote Command `<L[4] DATAID OBJSPEC RCMD <L[n] <L[2] CPNAME CEPVAL>…>>`
    /// -> S2F50 (CEPACK as `<B>`; a list-valued CEPVAL is checked as a whole).
    pub(super) fn s2f49_enhanced_remote_command(
        &mut self,
        body: Option<&Item>,
        now: Instant,
    ) -> Parsed<Option<Item>> {
        let [_dataid, _objspec, rcmd, parameters] = list_of(required(body)?, 4)? else {
            return Err(Illegal);
        };
        let parameters = list(parameters)?;
        self.remote_command(rcmd, parameters, now).map(Some)
    }
}
