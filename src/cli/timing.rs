//! Where a survey's wall time goes: each cell's set-up (exact posterior
//! and checkpoints), sampler run and audit, summed by phase, by case and
//! by sampler. Printed to stderr; timings never enter a report, which
//! stays identical from run to run.
//!
//! A cell's time is the wall-clock span from its start to its end. Cells
//! run concurrently and share the thread pool with the samplers' own
//! parallel loops, so the spans overlap: their sum can exceed the wall
//! time times the thread count, and it is not CPU time.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::counted;

/// The seconds one cell spent in each phase.
#[derive(Clone, Copy, Debug, Default)]
pub struct CellTime {
    pub setup: f64,
    pub run: f64,
    pub audit: f64,
}

impl CellTime {
    pub fn total(&self) -> f64 {
        self.setup + self.run + self.audit
    }

    fn add(&mut self, other: &CellTime) {
        self.setup += other.setup;
        self.run += other.run;
        self.audit += other.audit;
    }
}

/// One timed cell.
pub struct Timed<'a> {
    pub sampler: &'a str,
    pub case: &'a str,
    pub time: CellTime,
}

/// One line: cells, wall time, threads, and the shares of the phases in
/// the summed spans of the cells.
pub fn summary(cells: &[Timed<'_>], wall: f64, threads: usize) -> String {
    let mut total = CellTime::default();
    cells.iter().for_each(|c| total.add(&c.time));
    let busy = total.total();
    let share = |s: f64| 100.0 * s / busy.max(f64::MIN_POSITIVE);
    format!(
        "survey: {} in {wall:.1}s on {}; the cells' overlapping \
         wall-clock spans sum to {busy:.1}s (not CPU time): set-up {:.0}%, \
         samplers {:.0}%, audits {:.0}%",
        counted(cells.len(), "cell"),
        counted(threads, "thread"),
        share(total.setup),
        share(total.run),
        share(total.audit),
    )
}

/// Tables of the cells' wall-clock spans summed by case and by sampler
/// (heaviest first), and the slowest cells.
pub fn breakdown(cells: &[Timed<'_>]) -> String {
    let mut out = String::from(
        "seconds below are wall-clock spans of the cells, which overlap \
         (cells run concurrently): not CPU time\n\n",
    );
    let by = |key: fn(&Timed<'_>) -> String| {
        let mut sums: BTreeMap<String, CellTime> = BTreeMap::new();
        for c in cells {
            sums.entry(key(c)).or_default().add(&c.time);
        }
        let mut rows: Vec<(String, CellTime)> = sums.into_iter().collect();
        rows.sort_by(|a, b| b.1.total().total_cmp(&a.1.total()));
        rows
    };
    let mut slowest: Vec<(String, CellTime)> = cells
        .iter()
        .map(|c| (format!("{} on {}", c.sampler, c.case), c.time))
        .collect();
    slowest.sort_by(|a, b| b.1.total().total_cmp(&a.1.total()));
    slowest.truncate(5);
    let groups = [
        ("case", by(|c| c.case.to_string())),
        ("sampler", by(|c| c.sampler.to_string())),
        ("slowest cell", slowest),
    ];
    for (title, rows) in groups {
        let width = rows
            .iter()
            .map(|r| r.0.chars().count())
            .chain([title.len()])
            .max()
            .unwrap_or(0);
        let _ = writeln!(
            out,
            "{title:<width$}  {:>8}  {:>8}  {:>8}  {:>8}",
            "total s", "set-up", "sampler", "audit"
        );
        for (name, t) in rows {
            let _ = writeln!(
                out,
                "{name:<width$}  {:>8.2}  {:>8.2}  {:>8.2}  {:>8.2}",
                t.total(),
                t.setup,
                t.run,
                t.audit
            );
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells() -> Vec<Timed<'static>> {
        let t = |setup, run, audit| CellTime { setup, run, audit };
        vec![
            Timed { sampler: "dps", case: "a", time: t(1.0, 2.0, 1.0) },
            Timed { sampler: "dps", case: "b", time: t(0.0, 6.0, 2.0) },
            Timed { sampler: "exact", case: "b", time: t(1.0, 0.0, 7.0) },
        ]
    }

    #[test]
    fn summary_shares_add_up_over_cells() {
        let line = summary(&cells(), 10.0, 2);
        assert_eq!(
            line,
            "survey: 3 cells in 10.0s on 2 threads; the cells' overlapping \
             wall-clock spans sum to 20.0s (not CPU time): set-up 10%, \
             samplers 40%, audits 50%"
        );
        let one = summary(&cells()[..1], 4.0, 1);
        assert!(
            one.starts_with("survey: 1 cell in 4.0s on 1 thread;"),
            "{one}"
        );
    }

    #[test]
    fn breakdown_sorts_groups_heaviest_first() {
        let text = breakdown(&cells());
        let lines: Vec<&str> = text.lines().skip(2).collect();
        // Case b (16 s) before case a (4 s); sampler dps (12 s) before
        // exact (8 s); the slowest cell is dps on b.
        assert!(lines[1].starts_with("b ") && lines[1].contains("16.00"));
        assert!(lines[2].starts_with("a ") && lines[2].contains("4.00"));
        assert!(lines[5].starts_with("dps") && lines[5].contains("12.00"));
        assert!(lines[6].starts_with("exact") && lines[6].contains("8.00"));
        assert!(lines[9].starts_with("dps on b"), "{text}");
    }
}
