//! What a million labels cost: hours of labeling at a measured throughput, and US dollars at a
//! machine price (a GPU-hour, a CPU instance) or at an API's per-token prices.

use crate::EvalError;
use serde::Serialize;

/// How a labeler is paid for.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Pricing {
    /// A machine rented by the hour (USD per hour), busy labeling for the whole run.
    PerHour { usd_per_hour: f64 },
    /// An API billed by the token: USD per million input and output tokens, and the mean
    /// tokens one pair costs (prompt and answer).
    PerToken {
        usd_per_million_input: f64,
        usd_per_million_output: f64,
        input_tokens_per_pair: f64,
        output_tokens_per_pair: f64,
    },
}

/// The cost of one million labels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Cost {
    pub pairs_per_s: f64,
    pub pricing: Pricing,
    /// Wall-clock hours to label a million pairs at `pairs_per_s`.
    pub hours_per_million: f64,
    /// US dollars for a million labels.
    pub usd_per_million: f64,
}

/// The cost per million labels of a labeler measured at `pairs_per_s`.
///
/// Errors: a throughput that is not a positive finite number, or a negative or non-finite
/// price or token count.
pub fn cost_per_million(pairs_per_s: f64, pricing: &Pricing) -> Result<Cost, EvalError> {
    if !(pairs_per_s > 0.0 && pairs_per_s.is_finite()) {
        return Err(EvalError::InvalidSetting(format!(
            "throughput {pairs_per_s} pairs/s must be a positive number"
        )));
    }
    let check = |what: &str, x: f64| {
        if x >= 0.0 && x.is_finite() {
            Ok(x)
        } else {
            Err(EvalError::InvalidSetting(format!(
                "{what} {x} must be a finite number >= 0"
            )))
        }
    };
    let hours_per_million = 1e6 / pairs_per_s / 3600.0;
    let usd_per_million = match *pricing {
        Pricing::PerHour { usd_per_hour } => {
            check("price per hour", usd_per_hour)? * hours_per_million
        }
        Pricing::PerToken {
            usd_per_million_input,
            usd_per_million_output,
            input_tokens_per_pair,
            output_tokens_per_pair,
        } => {
            // a million pairs use `tokens_per_pair` million tokens of each kind
            check("input price", usd_per_million_input)?
                * check("input tokens per pair", input_tokens_per_pair)?
                + check("output price", usd_per_million_output)?
                    * check("output tokens per pair", output_tokens_per_pair)?
        }
    };
    Ok(Cost {
        pairs_per_s,
        pricing: *pricing,
        hours_per_million,
        usd_per_million,
    })
}

/// How labeler B compares with labeler A on speed and cost.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CostRatio {
    /// B's throughput over A's: "B is `speedup`x faster".
    pub speedup: f64,
    /// A's cost over B's: "B is `cheaper`x cheaper" (infinite when B costs nothing).
    pub cheaper: f64,
}

impl CostRatio {
    /// B (`b`) against A (`a`).
    pub fn of(a: &Cost, b: &Cost) -> CostRatio {
        CostRatio {
            speedup: b.pairs_per_s / a.pairs_per_s,
            cheaper: a.usd_per_million / b.usd_per_million,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn machine_time_is_priced_by_the_hour() {
        // 1000 pairs/s: a million in 1000 s; at 3.6 USD/h that is 1 USD
        let c = cost_per_million(1000.0, &Pricing::PerHour { usd_per_hour: 3.6 }).unwrap();
        assert!(close(c.hours_per_million, 1000.0 / 3600.0));
        assert!(close(c.usd_per_million, 1.0));
    }

    #[test]
    fn api_calls_are_priced_by_the_token() {
        // 500 input and 2 output tokens per pair at 0.15 and 0.60 USD per million tokens
        let p = Pricing::PerToken {
            usd_per_million_input: 0.15,
            usd_per_million_output: 0.60,
            input_tokens_per_pair: 500.0,
            output_tokens_per_pair: 2.0,
        };
        let c = cost_per_million(50.0, &p).unwrap();
        assert!(close(c.usd_per_million, 0.15 * 500.0 + 0.60 * 2.0));
        assert!(close(c.hours_per_million, 1e6 / 50.0 / 3600.0));
    }

    #[test]
    fn the_ratio_reads_as_faster_and_cheaper() {
        // the paper's shape: a student 17x faster on a machine whose hour costs 17/19 of the
        // teacher's is 19x cheaper
        let gpu = Pricing::PerHour { usd_per_hour: 19.0 };
        let smaller = Pricing::PerHour { usd_per_hour: 17.0 };
        let teacher = cost_per_million(10.0, &gpu).unwrap();
        let student = cost_per_million(170.0, &smaller).unwrap();
        let r = CostRatio::of(&teacher, &student);
        assert!(close(r.speedup, 17.0));
        assert!(close(r.cheaper, 19.0));
    }

    #[test]
    fn bad_inputs_are_refused() {
        let hour = Pricing::PerHour { usd_per_hour: 1.0 };
        assert!(cost_per_million(0.0, &hour).is_err());
        assert!(cost_per_million(f64::NAN, &hour).is_err());
        assert!(cost_per_million(1.0, &Pricing::PerHour { usd_per_hour: -1.0 }).is_err());
        let err = cost_per_million(-3.0, &hour).unwrap_err().to_string();
        assert!(err.contains("-3 pairs/s"), "{err}");
    }
}
