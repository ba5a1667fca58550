"""What every application configuration (a frozen dataclass) derives from its fields: the
command line's defaults, construction from parsed arguments, and the options that go into a
checkpoint's signature."""

from __future__ import annotations

import dataclasses


class CommandLineConfig:
    """Mixin for the frozen dataclass configurations. ``result_neutral`` (a class attribute):
    fields that cannot change a result (a checkpoint written with other values resumes); fields
    with ``compare=False`` (hooks) are never options."""

    result_neutral: tuple = ()

    @classmethod
    def defaults(cls) -> dict:
        """The default of every option (the command line's defaults too)."""
        return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING
                and f.compare}

    @classmethod
    def from_namespace(cls, ns, **hooks):
        """From the parsed command line (``argparse.Namespace``); ``hooks``: the callbacks."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in vars(ns).items() if k in names}, **hooks)

    def signature_options(self) -> dict:
        """Every option that can change a result (for the checkpoint's signature)."""
        return {f.name: getattr(self, f.name) for f in sorted(dataclasses.fields(self), key=lambda f: f.name)
                if f.compare and f.name not in self.result_neutral}
