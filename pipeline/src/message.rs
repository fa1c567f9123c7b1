//! What the rings between the pipeline threads carry.

use caldera_engine::{Command, Event};

/// What the engine thread emits: the events a command produced, then the command itself. The
/// journal needs both (commands are re-run on replay, events are for consumers); the gateway
/// routes the events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// A command the engine executed; its events precede it.
    Command(Command),
    /// An event.
    Event(Event),
}
