"""The HTTP server: owns every write to PostgreSQL and every decision about what runs next."""
