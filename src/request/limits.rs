//! The request's output limits, resolved once right after routing and passed down to
//! admission, the cache key, dispatch, the providers and the ledger, so every stage
//! works from the same numbers.

use super::Request;

/// How many output tokens the request may generate, and how many admission reserves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Output tokens each choice may generate: the client's `max_completion_tokens` (or
    /// `max_tokens`) under the rule's cap. `None` leaves it to the deployment's
    /// `default_max_tokens`, which validation keeps within [`Limits::reserved_output`].
    pub max_tokens: Option<u64>,
    /// Choices asked for (`n`): each may generate up to `max_tokens`.
    pub choices: u64,
    /// Output tokens reserved for the whole reply: `max_tokens`, or the budgets'
    /// `default_max_tokens` when the request sets none, for each choice.
    pub reserved_output: u64,
}

impl Limits {
    /// The limits of `request` routed by a rule whose cap is `rule_cap`, with
    /// `default_max_tokens` assumed for a request that sets none.
    pub fn resolve(request: &Request, rule_cap: Option<u64>, default_max_tokens: u64) -> Self {
        let max_tokens = match (request.max_tokens, rule_cap) {
            (Some(asked), Some(cap)) => Some(asked.min(cap)),
            (asked, cap) => asked.or(cap),
        };
        Limits {
            max_tokens,
            choices: request.choices,
            // Saturating: a client may ask for up to u64::MAX tokens.
            reserved_output: max_tokens
                .unwrap_or(default_max_tokens)
                .saturating_mul(request.choices),
        }
    }

    /// The most output tokens the whole reply may hold, when the request bounds it.
    pub fn max_output(&self) -> Option<u64> {
        self.max_tokens.map(|m| m.saturating_mul(self.choices))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: &str) -> Request {
        let Ok(request) = Request::parse(body.as_bytes()) else {
            unreachable!("a valid body")
        };
        request
    }

    const HI: &str = r#""model":"auto","messages":[{"role":"user","content":"hi"}]"#;

    #[test]
    fn the_rule_cap_bounds_what_the_client_asked_and_replaces_nothing_asked() {
        let asked = request(&format!("{{{HI},\"max_tokens\":500,\"n\":2}}"));
        let limits = Limits::resolve(&asked, Some(200), 4096);
        assert_eq!(limits.max_tokens, Some(200));
        assert_eq!(limits.reserved_output, 400);
        assert_eq!(limits.max_output(), Some(400));
        assert_eq!(Limits::resolve(&asked, None, 4096).max_tokens, Some(500));

        let unasked = request(&format!("{{{HI}}}"));
        assert_eq!(
            Limits::resolve(&unasked, Some(200), 4096).max_tokens,
            Some(200)
        );
        let open = Limits::resolve(&unasked, None, 4096);
        assert_eq!(open.max_tokens, None);
        assert_eq!(open.reserved_output, 4096);
        assert_eq!(open.max_output(), None);
    }

    #[test]
    fn max_completion_tokens_wins_and_huge_values_saturate() {
        let both = request(&format!(
            "{{{HI},\"max_tokens\":900,\"max_completion_tokens\":300}}"
        ));
        assert_eq!(Limits::resolve(&both, None, 4096).max_tokens, Some(300));
        let huge = request(&format!("{{{HI},\"max_tokens\":{},\"n\":3}}", u64::MAX));
        assert_eq!(Limits::resolve(&huge, None, 4096).reserved_output, u64::MAX);
    }
}
