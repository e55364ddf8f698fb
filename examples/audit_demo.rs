//! Audits one sampler on one case and prints the report.
//!
//! `cargo run --release --example audit_demo -- fsr-two-modes-1d exact`

use posterior_lens::audit::Audit;
use posterior_lens::case::Case;
use posterior_lens::sampler;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let case = args.next().unwrap_or_else(|| "fsr-two-modes-1d".into());
    let spec = args.next().unwrap_or_else(|| "exact".into());
    let case = Case::builtin(&case)?;
    let sampler = sampler::build(&spec)?;
    let n: usize = std::env::var("PARTICLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let report = Audit::new().particles(n).run(&case, sampler.as_ref())?;
    print!("{}", report.to_text());
    Ok(())
}
