//! The counters are indexed by discriminant: `ALL` must list the variants in declaration order.

use super::Op;
use crate::CloseReason;

#[test]
fn all_lists_the_variants_in_declaration_order() {
    assert!(Op::ALL.iter().enumerate().all(|(i, op)| *op as usize == i));
    assert!(CloseReason::ALL.iter().enumerate().all(|(i, r)| *r as usize == i));
}
