"""Files that come with sdcorr (configs, the demo pairs), found from any working directory.

``sdcorr test --config configs/smoke.yaml`` names the config relative to the checkout, and the config
names ``datamodules/demo_pairs`` the same way. Run from another folder, such a relative path is looked
up in the installation as well, so the README's commands work from anywhere.
"""

from __future__ import annotations

from pathlib import Path

#: the folder that holds ``sdcorr/``, ``datamodules/`` and (in a checkout) ``configs/``
INSTALL_ROOT = Path(__file__).resolve().parents[1]


def bundled(path: str | Path) -> Path:
    """``path`` itself when it exists or is absolute; else the file or folder of that relative name in the
    installation (:data:`INSTALL_ROOT`) when there is one; else ``path`` (for the caller's "not found").

    >>> bundled("configs/smoke.yaml") == INSTALL_ROOT / "configs" / "smoke.yaml" or Path("configs").is_dir()
    True
    """
    path = Path(path)
    if path.is_absolute() or path.exists():
        return path
    candidate = INSTALL_ROOT / path
    return candidate if candidate.exists() else path
