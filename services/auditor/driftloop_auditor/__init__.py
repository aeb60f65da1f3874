"""auditor: writes one `audit` record per lifecycle event, so the loop's history is one topic.

It is the reference service for the loop in `driftloop_common`: small, pure, idempotent.
"""
