//! Accounting: usage, exact prices and costs, and the reference cost that measures savings.
//!
//! Pure: no I/O. The handler builds a ledger record from what this module computes.

pub mod money;
pub mod tokens;
pub mod usage;

pub use money::{PerMillion, Usd};
pub use usage::{Price, Usage};

/// What one request cost, and what the frontier reference model would have cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Costing {
    pub cost: Usd,
    pub reference_cost: Usd,
}

impl Costing {
    /// Prices `usage` at the serving deployment's price and at the reference price.
    pub fn of(usage: &Usage, price: &Price, reference: &Price) -> Self {
        Costing {
            cost: price.cost(usage),
            reference_cost: reference.cost(usage),
        }
    }

    /// Reference cost minus actual cost (negative when the route was dearer).
    pub fn savings(&self) -> Usd {
        self.reference_cost - self.cost
    }
}
