//! Evaluates expression trees.

use crate::parser::{BinOp, Expr};

fn constant(name: &str) -> Result<f64, String> {
    match name {
        "pi" => Ok(std::f64::consts::PI),
        "e" => Ok(std::f64::consts::E),
        "tau" => Ok(std::f64::consts::TAU),
        other => Err(format!("unknown constant '{other}'")),
    }
}

fn call(name: &str, args: &[f64]) -> Result<f64, String> {
    let one = |f: fn(f64) -> f64| match args {
        [x] => Ok(f(*x)),
        _ => Err(format!("{name}() takes 1 argument, got {}", args.len())),
    };
    match name {
        "sqrt" => one(f64::sqrt),
        "abs" => one(f64::abs),
        "sin" => one(f64::sin),
        "cos" => one(f64::cos),
        "ln" => one(f64::ln),
        "floor" => one(f64::floor),
        "ceil" => one(f64::ceil),
        "min" | "max" => {
            let mut values = args.iter().copied();
            let first = values
                .next()
                .ok_or_else(|| format!("{name}() needs at least 1 argument"))?;
            Ok(values.fold(first, |acc, v| if name == "min" { acc.min(v) } else { acc.max(v) }))
        }
        "sum" => Ok(args.iter().sum()),
        other => Err(format!("unknown function '{other}'")),
    }
}

pub fn evaluate(expr: &Expr) -> Result<f64, String> {
    let value = match expr {
        Expr::Number(n) => *n,
        Expr::Constant(name) => constant(name)?,
        Expr::Negate(inner) => -evaluate(inner)?,
        Expr::Binary(op, left, right) => {
            let (a, b) = (evaluate(left)?, evaluate(right)?);
            match op {
                BinOp::Add => a + b,
                BinOp::Sub => a - b,
                BinOp::Mul => a * b,
                BinOp::Div if b == 0.0 => return Err("division by zero".to_string()),
                BinOp::Div => a / b,
                BinOp::Rem if b == 0.0 => return Err("division by zero".to_string()),
                BinOp::Rem => a % b,
                BinOp::Pow => a.powf(b),
            }
        }
        Expr::Call(name, args) => {
            let values = args.iter().map(evaluate).collect::<Result<Vec<_>, _>>()?;
            call(name, &values)?
        }
    };
    if value.is_finite() {
        Ok(value)
    } else {
        Err("result is not a finite number".to_string())
    }
}

/// Integers print without a fractional part; everything else with up to 10
/// significant decimals and trailing zeros removed.
pub fn format_value(value: f64) -> String {
    if value == value.trunc() && value.abs() < 1e15 {
        return format!("{}", value as i64);
    }
    let text = format!("{value:.10}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{lexer::tokenize, parser::parse};

    fn calc(text: &str) -> Result<f64, String> {
        evaluate(&parse(&tokenize(text)?)?)
    }

    #[test]
    fn precedence_and_associativity() {
        assert_eq!(calc("1 + 2 * 3"), Ok(7.0));
        assert_eq!(calc("(1 + 2) * 3"), Ok(9.0));
        assert_eq!(calc("10 - 4 - 3"), Ok(3.0));
        assert_eq!(calc("2 ^ 3 ^ 2"), Ok(512.0));
        assert_eq!(calc("-2 ^ 2"), Ok(-4.0));
    }

    #[test]
    fn functions_and_constants() {
        assert_eq!(calc("max(1, 5, 3)"), Ok(5.0));
        assert_eq!(calc("sum(1, 2, 3.5)"), Ok(6.5));
        assert_eq!(calc("floor(pi)"), Ok(3.0));
        assert!(calc("nope(1)").is_err());
    }

    #[test]
    fn errors() {
        assert_eq!(calc("1 / 0"), Err("division by zero".to_string()));
        assert!(calc("1 +").is_err());
        assert!(calc("(1").is_err());
        assert!(calc("1 $ 2").is_err());
    }

    #[test]
    fn formatting() {
        assert_eq!(format_value(3.0), "3");
        assert_eq!(format_value(0.5), "0.5");
        assert_eq!(format_value(1.0 / 3.0), "0.3333333333");
    }
}
