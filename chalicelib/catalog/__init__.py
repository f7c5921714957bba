"""The catalog: TMDB sync jobs, storage and the reads behind the catalog API."""
