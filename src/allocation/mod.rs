//! Allocation: config → validated rules → a pure [`Allocator`] that decides, for
//! one charge, its owner (and why) or why it is unallocated; and [`split`], which divides a
//! shared amount among owners exactly.
//!
//! Decision order for a charge:
//! 1. the rules, in order; the first whose every matcher matches decides: an owner, or a
//!    shared split;
//! 2. else the owner tags (`owner_tags`, in priority order, keys normalised): the first
//!    non-empty value; a value in `owners` (case-insensitively) is the owner, any other value
//!    is `unknown_owner`;
//! 3. else a reason code, the first that applies:
//!    - `commitment_purchase`: a Purchase charge (savings plan / reservation fees) — bought for
//!      the whole organisation, it needs a rule;
//!    - `untaggable_charge`: a charge the provider cannot tag: Tax, Credit, Adjustment, a
//!      support plan (service name containing "Support"), or a marketplace charge (publisher
//!      differs from provider) with no rule;
//!    - `new_account`: the sub account first appeared after its billing account's first
//!      *complete* billing period in the ledger (the month its data begins, if it begins on the
//!      1st, else the next month), less than `new_account_days` (default 30) before the charge:
//!      tagging and rules usually lag behind a new account. (In a first import every sub
//!      account appears hours after its billing account; none of them is new.)
//!    - `shared_no_rule`: a charge with no resource id (account-level, e.g. data transfer or
//!      a flat fee): shared by nature, but no rule says how to split it;
//!    - `no_owner_tag`: a resource charge without any owner tag.

mod allocator;
mod config;
mod glob;
mod split;

pub use allocator::*;
pub use config::*;
pub use glob::*;
pub use split::*;

/// Why a charge is unallocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    NoOwnerTag,
    UnknownOwner,
    UntaggableCharge,
    SharedNoRule,
    NewAccount,
    CommitmentPurchase,
}

impl Reason {
    pub const ALL: [Reason; 6] = [
        Reason::NoOwnerTag,
        Reason::UnknownOwner,
        Reason::UntaggableCharge,
        Reason::SharedNoRule,
        Reason::NewAccount,
        Reason::CommitmentPurchase,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Reason::NoOwnerTag => "no_owner_tag",
            Reason::UnknownOwner => "unknown_owner",
            Reason::UntaggableCharge => "untaggable_charge",
            Reason::SharedNoRule => "shared_no_rule",
            Reason::NewAccount => "new_account",
            Reason::CommitmentPurchase => "commitment_purchase",
        }
    }

    /// What a manager should do about it.
    pub fn advice(&self) -> &'static str {
        match self {
            Reason::NoOwnerTag => "resources without an owner tag: tag them, or add a rule",
            Reason::UnknownOwner => {
                "owner tag values that are not a known owner (typos?): fix the tags or add an alias"
            }
            Reason::UntaggableCharge => "tax, credits, support and marketplace fees: add a shared or owner rule",
            Reason::SharedNoRule => "account-level charges with no resource: add a shared rule",
            Reason::NewAccount => "accounts first seen recently: add a rule for the account",
            Reason::CommitmentPurchase => "savings plan / reservation purchases: add a shared rule",
        }
    }
}

/// How an allocated charge's owner was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// Index into `owner_tags`.
    Tag(usize),
    /// Index into `rules`.
    Rule(usize),
}

/// An allocation row's basis as the ledger stores it (text, one closed set): `tag:KEY` (the
/// owner tag that decided), `rule:NAME` (an owner rule), `shared:MODE:rule:NAME` (a shared
/// rule's split; MODE is `proportional`, `even`, `fixed` or
/// [`EVEN_NO_DIRECT_SPEND`](crate::reconcile::EVEN_NO_DIRECT_SPEND)) and `unallocated`. Parsed
/// and written only here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredBasis<'a> {
    Tag(&'a str),
    Rule(&'a str),
    Shared {
        mode: &'a str,
        rule: &'a str,
    },
    Unallocated,
    /// Text this version does not write (kept as is).
    Other(&'a str),
}

impl<'a> StoredBasis<'a> {
    pub fn parse(s: &'a str) -> StoredBasis<'a> {
        if s == "unallocated" {
            return StoredBasis::Unallocated;
        }
        if let Some(rest) = s.strip_prefix("shared:")
            && let Some((mode, rule)) = rest.split_once(":rule:")
        {
            return StoredBasis::Shared { mode, rule };
        }
        if let Some(k) = s.strip_prefix("tag:") {
            return StoredBasis::Tag(k);
        }
        if let Some(r) = s.strip_prefix("rule:") {
            return StoredBasis::Rule(r);
        }
        StoredBasis::Other(s)
    }

    /// A share of a shared rule's charges (an owner's split, not its direct spend).
    pub fn is_shared(s: &str) -> bool {
        matches!(StoredBasis::parse(s), StoredBasis::Shared { .. })
    }
}

impl std::fmt::Display for StoredBasis<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoredBasis::Tag(k) => write!(f, "tag:{k}"),
            StoredBasis::Rule(r) => write!(f, "rule:{r}"),
            StoredBasis::Shared { mode, rule } => write!(f, "shared:{mode}:rule:{rule}"),
            StoredBasis::Unallocated => f.write_str("unallocated"),
            StoredBasis::Other(s) => f.write_str(s),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Owner {
        owner: String,
        basis: Basis,
    },
    /// Index of the shared rule.
    Shared(usize),
    Unallocated(Reason),
}

#[cfg(test)]
mod tests {
    use rust_decimal::Decimal;

    use super::*;

    /// Every stored basis reads back as what wrote it, including rule names with colons and
    /// the `even(no direct spend)` fallback; only `shared:…:rule:…` counts as shared.
    #[test]
    fn stored_basis_round_trips_and_only_splits_are_shared() {
        let cases = [
            StoredBasis::Tag("team"),
            StoredBasis::Rule("platform:net"),
            StoredBasis::Shared { mode: "proportional", rule: "support" },
            StoredBasis::Shared { mode: crate::reconcile::EVEN_NO_DIRECT_SPEND, rule: "a:rule:b" },
            StoredBasis::Unallocated,
        ];
        for b in cases {
            let text = b.to_string();
            assert_eq!(StoredBasis::parse(&text), b, "{text}");
        }
        assert_eq!(StoredBasis::Shared { mode: "fixed", rule: "tax" }.to_string(), "shared:fixed:rule:tax");
        assert!(StoredBasis::is_shared("shared:even:rule:x"));
        assert!(!StoredBasis::is_shared("rule:shared:x"));
        assert!(!StoredBasis::is_shared("tag:team"));
        assert!(!StoredBasis::is_shared("unallocated"));
        assert_eq!(StoredBasis::parse("shared:oops"), StoredBasis::Other("shared:oops"));
    }

    fn d(s: &str) -> Decimal {
        s.parse().expect("decimal")
    }

    #[test]
    fn thirds_of_100_sum_back_exactly_and_the_cent_goes_to_the_first_owner() {
        let w = vec![("search".into(), d("1")), ("data".into(), d("1")), ("payments".into(), d("1"))];
        let s = split(d("100.00"), &w).expect("split");
        assert_eq!(
            s,
            vec![("data".into(), d("33.34")), ("payments".into(), d("33.33")), ("search".into(), d("33.33"))]
        );
        let neg = split(d("-100.00"), &w).expect("split");
        assert_eq!(neg.iter().map(|x| x.1).sum::<Decimal>(), d("-100.00"));
        assert_eq!(neg[0].1, d("-33.34"));
    }

    #[test]
    fn proportional_split_keeps_the_amounts_scale_and_largest_remainders_win() {
        let w = vec![("a".into(), d("2")), ("b".into(), d("1"))];
        // 11 units of 10^-6: a gets 7 (drops 1/3), b gets 3 (drops 2/3) + the remainder unit.
        let s = split(d("0.000011"), &w).expect("split");
        assert_eq!(s, vec![("a".into(), d("0.000007")), ("b".into(), d("0.000004"))]);
        let z = split(d("0"), &w).expect("split");
        assert_eq!(z.iter().map(|x| x.1).sum::<Decimal>(), Decimal::ZERO);
        assert!(split(d("1"), &[("a".into(), Decimal::ZERO)]).is_err());
    }

    #[test]
    fn globs() {
        let g = |p: &str| Glob::new(p).expect("glob");
        assert!(g("checkout-*").matches("Checkout-API"));
        assert!(!g("checkout-*").matches("checkou"));
        assert!(g("*").matches(""));
        assert!(g("a?c").matches("abc"));
        assert!(g("i-[0-9a-f]*").matches("i-0abc"));
        assert!(!g("i-[!0-9]*").matches("i-0abc"));
        assert!(g("*-prod-*").matches("db-prod-eu"));
        assert!(g("a\\*").matches("a*") && !g("a\\*").matches("ab"));
        assert!(Glob::new("arn:[abc").expect_err("bad").contains("no closing"));
        assert!(Glob::new("[z-a]").expect_err("bad").contains("reversed"));
    }
}
