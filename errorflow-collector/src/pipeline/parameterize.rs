//! Parameterisation of messages (stub).
