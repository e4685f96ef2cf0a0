//! Reader of aider's output (see the module docs of [`super`]).

use outpost_shared::domain::AgentReport;

/// The report in aider's output `text`.
pub fn read(text: &str) -> AgentReport {
    let _ = text;
    AgentReport::default()
}
