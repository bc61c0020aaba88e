//! Tests of `worker`.

use super::*;
use crate::api::Op;

fn status(op: Op, status: u16) -> ApiError {
    ApiError::Status { op, status, target: "http://x/api".into(), message: "conflict".into(), retry_after: None }
}

#[test]
fn a_409_on_the_groups_own_files_means_canceled_on_the_server() {
    for op in [Op::PartUrls, Op::CompleteFile] {
        assert!(matches!(classify_api("call", &status(op, 409)), Stop::CanceledOnServer(_)), "{op}");
    }
    // Elsewhere a 409 stays a failure with the server's words, and a 404 is still "gone".
    assert!(matches!(classify_api("call", &status(Op::StartGroup, 409)), Stop::Failed(m) if m.contains("conflict")));
    assert!(matches!(classify_api("call", &status(Op::PartUrls, 404)), Stop::Gone(_)));
    assert!(matches!(classify_api("call", &status(Op::PartUrls, 401)), Stop::Auth(_)));
}
