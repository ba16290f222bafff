//! rustworker: evaluates arithmetic expressions given as arguments (or one per
//! line on stdin) and prints the results.  It exists so the hive has a worker
//! built with cargo; it deliberately has no crate dependencies so that it
//! builds offline.

mod eval;
mod lexer;
mod parser;
mod stats;

use std::io::{self, BufRead, Write};
use std::process::ExitCode;

fn run_line(line: &str, stats: &mut stats::Stats, out: &mut impl Write) -> io::Result<bool> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(true);
    }
    let result = lexer::tokenize(line)
        .and_then(|tokens| parser::parse(&tokens))
        .and_then(|expr| eval::evaluate(&expr));
    match result {
        Ok(value) => {
            stats.record(value);
            writeln!(out, "{line} = {}", eval::format_value(value))?;
            Ok(true)
        }
        Err(err) => {
            writeln!(out, "{line}: error: {err}")?;
            Ok(false)
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--version") {
        println!("rustworker {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let mut stats = stats::Stats::default();
    let mut ok = true;
    let outcome: io::Result<()> = (|| {
        if args.is_empty() {
            for line in io::stdin().lock().lines() {
                ok &= run_line(&line?, &mut stats, &mut out)?;
            }
        } else {
            for arg in &args {
                ok &= run_line(arg, &mut stats, &mut out)?;
            }
        }
        if stats.count() > 1 {
            writeln!(out, "{}", stats.summary())?;
        }
        Ok(())
    })();
    if let Err(err) = outcome {
        eprintln!("rustworker: {err}");
        return ExitCode::from(2);
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
