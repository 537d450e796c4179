//! Accounting: usage, exact prices and costs, and the reference cost that measures savings.
//!
//! Pure: no I/O. The pipeline's finisher ([`crate::pipeline`]) prices each request
//! here, then settles its budget reservation and writes its ledger record.

pub mod money;
pub mod tokens;
pub mod usage;

pub use money::{MoneyError, PerMillion, Usd};
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

    /// What a request that used `usage` cost, served by `served`, against `reference`:
    /// a cached answer spent nothing and saved the whole reference cost; a request no
    /// deployment served is priced at nothing.
    pub fn settle(usage: &Usage, served: Served<'_>, reference: &Price) -> Self {
        match served {
            Served::Cache => Costing {
                cost: Usd::ZERO,
                reference_cost: reference.cost(usage),
            },
            Served::Deployment(price) => Costing::of(usage, price, reference),
            Served::Nowhere => Costing::default(),
        }
    }

    /// Reference cost minus actual cost (negative when the route was dearer).
    pub fn savings(&self) -> Usd {
        self.reference_cost - self.cost
    }
}

/// Who served a request, for pricing it.
#[derive(Clone, Copy, Debug)]
pub enum Served<'a> {
    /// The response cache.
    Cache,
    /// A deployment at this price.
    Deployment(&'a Price),
    /// Nothing: the request failed before any deployment answered.
    Nowhere,
}
