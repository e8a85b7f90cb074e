"""What a request carries besides plain text, and what it is written in: language identification
(``langid``); vision and translation handling come here too (DESIGN.md)."""
