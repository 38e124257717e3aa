"""`mobilellm device ios`: push artifacts to a phone, run the app's benchmark, pull results. (stub)"""
from mobilellm.errors import UserError


def add_arguments(p):
    p.add_argument("--artifacts", required=True, help="directory of artifacts with manifests")


def main(ns):
    raise UserError("mobilellm device ios is not implemented yet")
