"""One folder per pipeline step: plain-Python logic plus a thin KFP component wrapper."""
