# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Errors a user can cause, carried as one line that says what to do."""

from __future__ import annotations


class Hal9000Error(Exception):
    """A problem with the user's input or environment; str() is the whole message."""
