"""Developer tooling: code generation, the embedded Postgres, provisioning and the runner."""
