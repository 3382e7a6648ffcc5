//! Workflows: API and UI formats, conversion, validation and parameters.
