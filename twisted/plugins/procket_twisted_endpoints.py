# The procket: endpoint string prefix (procket:tcp:80). Import-light on purpose: see
# procket_twisted/_twisted/parser.py. This directory has no __init__.py, and neither has twisted/.
from procket_twisted._twisted.parser import ProcketServerParser

procketServerParser = ProcketServerParser()
