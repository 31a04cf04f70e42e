//! openclaw-cloud's GitOps compiler.
