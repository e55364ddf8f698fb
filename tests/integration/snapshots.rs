//! Snapshot regression of the reports of every built-in sampler on two
//! small cases, in the rounded snapshot view (stored in the top-level
//! `snapshots/`), and their stability across thread counts.

use posterior_lens::audit::Audit;
use posterior_lens::case::Case;
use posterior_lens::sampler;

const CASES: [&str; 2] = ["fsr-two-modes-1d", "gmm-2d-one-coordinate"];

fn audit() -> Audit {
    Audit::new().particles(400).seed(3).reference_draws(5000)
}

#[test]
fn reports_of_builtin_samplers() {
    for name in CASES {
        let case = Case::builtin(name).unwrap();
        for entry in sampler::registry() {
            let sampler = sampler::build(entry.name).unwrap();
            let view = match audit().run(&case, sampler.as_ref()) {
                Ok(report) => report.snapshot_view(),
                Err(e) => serde_json::json!({ "error": e.to_string() }),
            };
            insta::with_settings!({
                snapshot_path => concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots"),
                prepend_module_to_snapshot => false,
                omit_expression => true,
            }, {
                insta::assert_json_snapshot!(format!("report-{}-{name}", entry.name), view);
            });
        }
    }
}

#[test]
fn reports_do_not_depend_on_the_thread_count() {
    let case = Case::builtin("gmm-2d-one-coordinate").unwrap();
    for spec in ["exact", "score:method=em,steps=100", "ddrm", "tds"] {
        let Ok(sampler) = sampler::build(spec) else { continue };
        let many = audit().run(&case, sampler.as_ref()).unwrap();
        let pool =
            rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let one =
            pool.install(|| audit().run(&case, sampler.as_ref()).unwrap());
        assert_eq!(many, one, "{spec}");
    }
}
