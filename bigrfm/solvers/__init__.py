"""Solvers for the kernel ridge step of an RFM iteration."""
