"""Benchmarks of ployweb against its peers, run by `python manage.py ploy_bench`."""
