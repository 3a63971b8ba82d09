"""The OCI-compatible HTTP API: Generative AI management routes under /20231130, the Object Storage
subset the SDK needs for datasets, request-signature auth and OCI-shaped errors."""
