//! The report of a run: what was done, what was measured, what broke.
//! Written as report.json, summary.txt and timeline.svg.

use crate::check::Violation;
use crate::history::{Outcome, RegisterOp};
use crate::schedule::Fault;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::Path;

/// One fault as it happened.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultRecord {
    pub fault: Fault,
    /// Whom it hit, resolved when it was applied.
    pub target: String,
    /// How it was made (rules, signals, qdisc).
    pub how: String,
    pub started_ms: f64,
    pub healed_ms: Option<f64>,
    /// From the fault to the first register write that succeeded after it.
    pub unavailability_ms: Option<f64>,
    /// For kills of a control-plane replica: until a standby led.
    pub takeover_ms: Option<f64>,
}

/// Counts of what the workloads did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Counts {
    pub register_ok: usize,
    pub register_fail: usize,
    pub register_unknown: usize,
    pub api_writes_ok: usize,
    pub api_writes_refused: usize,
    pub api_writes_unknown: usize,
    pub fenced_writes_accepted: usize,
    pub fenced_writes_refused: usize,
    pub fenced_writes_unknown: usize,
    pub watch_events: Vec<usize>,
    pub watch_resumes: Vec<u32>,
    pub store_events: usize,
}

/// Leaders over time, as the peers reported them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaderSample {
    pub at_ms: f64,
    /// 1-based peer id; None while no peer named a leader.
    pub leader: Option<u64>,
    pub term: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub run_id: String,
    pub seed: u64,
    pub peers: usize,
    /// Where the workload clients ran.
    pub clients: String,
    pub duration_ms: f64,
    pub faults: Vec<FaultRecord>,
    /// Every fault was healed before the checks ran.
    pub all_healed: bool,
    pub leader_elections: u64,
    pub leaders: Vec<LeaderSample>,
    pub counts: Counts,
    pub violations: Vec<Violation>,
    /// Checks that could not reach an answer (a linearizability budget that
    /// ran out); not violations, but not passes either.
    pub inconclusive: Vec<String>,
    /// Namespaces, links and processes of the run still present after
    /// teardown; filled in after the cluster is gone.
    pub left_behind: Vec<String>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.violations.is_empty() && self.left_behind.is_empty() && self.all_healed
    }

    /// The human-readable summary.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "berth chaos run {} (seed {}, {} peers, {:.1} s)",
            self.run_id,
            self.seed,
            self.peers,
            self.duration_ms / 1000.0
        );
        let _ = writeln!(s, "clients: {}", self.clients);
        let _ = writeln!(s, "faults:");
        for f in &self.faults {
            let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0} ms"));
            let _ = writeln!(
                s,
                "  #{:<2} {:<24} {:<28} unavailable {:>8}  takeover {:>8}  healed {}",
                f.fault.index,
                f.fault.kind.name(),
                f.target,
                ms(f.unavailability_ms),
                ms(f.takeover_ms),
                if f.healed_ms.is_some() { "yes" } else { "NO" }
            );
        }
        let c = &self.counts;
        let _ = writeln!(
            s,
            "registers: {} ok, {} failed, {} unknown; API writes: {} ok, {} refused, {} unknown",
            c.register_ok,
            c.register_fail,
            c.register_unknown,
            c.api_writes_ok,
            c.api_writes_refused,
            c.api_writes_unknown
        );
        let _ = writeln!(
            s,
            "fenced writes: {} accepted, {} refused, {} unknown; watch events per peer {:?}, \
             resumes {:?}; store events {}",
            c.fenced_writes_accepted,
            c.fenced_writes_refused,
            c.fenced_writes_unknown,
            c.watch_events,
            c.watch_resumes,
            c.store_events
        );
        let _ = writeln!(s, "leader elections: {}", self.leader_elections);
        for note in &self.inconclusive {
            let _ = writeln!(s, "INCONCLUSIVE: {note}");
        }
        for left in &self.left_behind {
            let _ = writeln!(s, "LEFT BEHIND: {left}");
        }
        if self.violations.is_empty() {
            let _ = writeln!(s, "no violations");
        }
        for v in &self.violations {
            let _ = writeln!(s, "VIOLATION [{}]: {}", v.checker, v.message);
        }
        s
    }

    /// Writes report.json, summary.txt and timeline.svg into `dir`.
    pub fn write(&self, dir: &Path, ops: &[RegisterOp]) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(dir.join("report.json"), json)?;
        std::fs::write(dir.join("summary.txt"), self.summary())?;
        std::fs::write(dir.join("timeline.svg"), self.timeline(ops))
    }

    /// Faults as bands, the leader as a coloured strip, and every register
    /// call as a dot at its latency (log scale): green ok, red failed,
    /// orange unknown.
    pub fn timeline(&self, ops: &[RegisterOp]) -> String {
        let (width, left, right) = (1200.0, 60.0, 20.0);
        let span = self.duration_ms.max(1.0);
        let x = |ms: f64| left + (ms / span) * (width - left - right);
        let (fault_top, leader_top, plot_top, plot_height) = (20.0, 150.0, 190.0, 300.0);
        let height = plot_top + plot_height + 40.0;
        let mut svg = String::new();
        let _ = writeln!(
            svg,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
             font-family=\"sans-serif\" font-size=\"10\">"
        );
        let _ = writeln!(svg, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
        let _ = writeln!(svg, "<text x=\"4\" y=\"14\">faults</text>");
        for (i, f) in self.faults.iter().enumerate() {
            let end = f.healed_ms.unwrap_or(span);
            let y = fault_top + (i % 8) as f64 * 15.0;
            let _ = writeln!(
                svg,
                "<rect x=\"{:.1}\" y=\"{y}\" width=\"{:.1}\" height=\"12\" fill=\"#f4a6a6\"/>\
                 <text x=\"{:.1}\" y=\"{}\">#{} {}</text>",
                x(f.started_ms),
                (x(end) - x(f.started_ms)).max(1.0),
                x(f.started_ms) + 2.0,
                y + 10.0,
                f.fault.index,
                f.fault.kind.name()
            );
        }
        let _ = writeln!(svg, "<text x=\"4\" y=\"{}\">leader</text>", leader_top + 12.0);
        let colours = ["#999", "#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#17becf"];
        for (i, sample) in self.leaders.iter().enumerate() {
            let end = self.leaders.get(i + 1).map_or(span, |next| next.at_ms);
            let colour = colours[sample.leader.map_or(0, |l| (l.max(1) as usize - 1) % 5 + 1)];
            let _ = writeln!(
                svg,
                "<rect x=\"{:.1}\" y=\"{leader_top}\" width=\"{:.1}\" height=\"16\" fill=\"{colour}\"/>",
                x(sample.at_ms),
                (x(end) - x(sample.at_ms)).max(0.5)
            );
        }
        let _ = writeln!(svg, "<text x=\"4\" y=\"{}\">latency</text>", plot_top + 10.0);
        // 1 ms .. 10 s, log scale.
        let y = |ms: f64| plot_top + plot_height * (1.0 - (ms.max(1.0).log10() / 4.0).min(1.0));
        for (label, ms) in
            [("1ms", 1.0), ("10ms", 10.0), ("100ms", 100.0), ("1s", 1000.0), ("10s", 10000.0)]
        {
            let _ = writeln!(
                svg,
                "<line x1=\"{left}\" x2=\"{}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/>\
                 <text x=\"20\" y=\"{:.1}\">{label}</text>",
                width - right,
                y(ms),
                y(ms),
                y(ms) + 3.0
            );
        }
        for op in ops {
            let call = op.call as f64 / 1e6;
            let latency = op.ret.map_or(10000.0, |r| (r.saturating_sub(op.call)) as f64 / 1e6);
            let colour = match op.outcome {
                Outcome::Ok => "#2ca02c",
                Outcome::Fail => "#d62728",
                Outcome::Unknown => "#ff7f0e",
            };
            let _ = writeln!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"1.5\" fill=\"{colour}\"/>",
                x(call),
                y(latency)
            );
        }
        let _ = writeln!(
            svg,
            "<text x=\"{left}\" y=\"{}\">0 s</text><text x=\"{}\" y=\"{}\">{:.1} s</text></svg>",
            height - 10.0,
            width - right - 40.0,
            height - 10.0,
            span / 1000.0
        );
        svg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::draw;

    fn report() -> Report {
        let fault = draw(1, 1, (100, 100), (100, 100)).remove(0);
        Report {
            run_id: "abc123".into(),
            seed: 1,
            peers: 3,
            clients: "host".into(),
            duration_ms: 1000.0,
            faults: vec![FaultRecord {
                fault,
                target: "peer-1".into(),
                how: "test".into(),
                started_ms: 100.0,
                healed_ms: Some(200.0),
                unavailability_ms: Some(42.0),
                takeover_ms: None,
            }],
            all_healed: true,
            leader_elections: 1,
            leaders: vec![
                LeaderSample { at_ms: 0.0, leader: Some(1), term: 2 },
                LeaderSample { at_ms: 500.0, leader: Some(2), term: 3 },
            ],
            counts: Counts::default(),
            violations: Vec::new(),
            inconclusive: Vec::new(),
            left_behind: Vec::new(),
        }
    }

    #[test]
    fn a_violation_or_a_leftover_fails_the_run_and_is_named() {
        let clean = report();
        assert!(clean.passed());
        assert!(clean.summary().contains("no violations"));
        let mut violated = report();
        violated.violations.push(Violation { checker: "watch".into(), message: "gap".into() });
        assert!(!violated.passed());
        assert!(violated.summary().contains("VIOLATION [watch]: gap"));
        let mut leaky = report();
        leaky.left_behind.push("namespace x".into());
        assert!(!leaky.passed());
        assert!(leaky.summary().contains("LEFT BEHIND: namespace x"));
        let mut unhealed = report();
        unhealed.all_healed = false;
        assert!(!unhealed.passed());
    }

    #[test]
    fn the_timeline_shows_faults_leaders_and_calls() {
        let report = report();
        let op = RegisterOp {
            client: 1,
            peer: 0,
            input: berth_raft_store::linearizability::KvInput::Get { key: "k".into() },
            call: 300_000_000,
            ret: Some(310_000_000),
            outcome: Outcome::Unknown,
            output: None,
            revision: None,
        };
        let svg = report.timeline(&[op]);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains(report.faults[0].fault.kind.name()));
        assert!(svg.contains("#1f77b4") && svg.contains("#2ca02c"), "two leaders, two colours");
        assert!(svg.contains("fill=\"#ff7f0e\""), "the unknown call is drawn orange");
    }
}
