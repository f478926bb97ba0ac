//! Operating a fleet (issue #22): suspending a destination by hand, relay
//! accounts that may hand mail on with its arrival time, and draining one
//! replica's queue into another relay.

mod drain;
mod handoff;
mod suspend;
