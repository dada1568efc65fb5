"""Third-party renderers: an installed distribution that registers in `syncer.renderers` is found and used."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

PLUGIN_MODULE = '''
"""A third-party renderer: one text file listing every route."""

class ListingRenderer:
    name = "listing"

    def __init__(self, options, output_dir=""):
        unknown = set(options) - {"title"}
        if unknown:
            from syncer.errors import ConfigError
            raise ConfigError(f"unknown renderer option listing.{sorted(unknown)[0]}; valid options: listing.title")
        self.title = options.get("title", "routes")

    def render(self, model):
        lines = [f"# {self.title}"]
        for vhost in model.virtual_hosts:
            for route in vhost.routes:
                lines.append(f"{vhost.hostname} {route.match.value} {route.path} -> {route.backend}")
        return {"routes.txt": ("\\n".join(lines) + "\\n").encode()}


class BootstrappingListingRenderer(ListingRenderer):
    """The same, with a bootstrap of its own: `syncer bootstrap listing-boot` must find it through the entry point."""

    name = "listing-boot"
    bootstrap_options = {"greeting": ("hello", "The first word of the bootstrap.")}

    def bootstrap(self, output_dir, settings):
        return f"# {settings['greeting']} from {output_dir} ({self.title})\\n"
'''


def install_plugin(site: Path, dist: str, name: str, target: str, *more: str) -> None:
    """What pip leaves behind for a distribution with entry points: a module and a .dist-info folder. `more`: further
    `name = target` lines of the same group."""
    site.mkdir(parents=True, exist_ok=True)
    (site / "acme_listing.py").write_text(PLUGIN_MODULE)
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = [f"{name} = {target}", *more]
    (info / "entry_points.txt").write_text("[syncer.renderers]\n" + "".join(f"{line}\n" for line in lines))


def syncer(*args: str, site: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCER_")}
    env["PYTHONPATH"] = str(site)
    return subprocess.run(
        [sys.executable, "-m", "syncer", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )


def test_third_party_renderer_is_listed_and_used(tmp_path: Path) -> None:
    site = tmp_path / "site"
    install_plugin(site, "acme-listing", "listing", "acme_listing:ListingRenderer")
    listed = syncer("renderers", site=site)
    assert listed.returncode == 0
    assert "listing\tacme-listing 1.0" in listed.stdout.splitlines()
    out = tmp_path / "out"
    out.mkdir()
    result = syncer(
        "once", "--source", "fixtures/demo", "--renderer", "listing", "--renderer-opt", "listing.title=demo",
        "--output-dir", str(out), site=site,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    text = (out / "routes.txt").read_text()
    assert text.startswith("# demo\n")
    assert "shop.example.com Prefix /api -> shop/api/8080" in text
    assert (out / "routes.txt").stat().st_mode & 0o777 == 0o600  # no secrets declared: every file owner-only
    bad = syncer("once", "--source", "fixtures/demo", "--renderer", "listing", "--renderer-opt", "listing.x=1",
                 "--output-dir", str(out), site=site)  # fmt: skip
    assert bad.returncode == 2 and "valid options: listing.title" in bad.stderr


def test_two_packages_claiming_one_name_are_named(tmp_path: Path) -> None:
    site = tmp_path / "site"
    install_plugin(site, "acme-traefik", "traefik", "acme_listing:ListingRenderer")
    out = tmp_path / "out"
    out.mkdir()
    result = syncer("once", "--source", "fixtures/demo", "--output-dir", str(out), site=site)
    assert result.returncode == 2
    assert "provided by more than one package" in result.stderr
    assert "acme-traefik 1.0" in result.stderr and "ingress-syncer" in result.stderr


def test_bootstrap_is_asked_of_the_plugin(tmp_path: Path) -> None:
    site = tmp_path / "site"
    install_plugin(
        site, "acme-listing", "listing", "acme_listing:ListingRenderer",
        "listing-boot = acme_listing:BootstrappingListingRenderer",
    )  # fmt: skip
    folder = tmp_path / "conf"
    listed = syncer("bootstrap", "--help", site=site)
    assert listed.returncode == 0
    commands = listed.stdout.split("Commands:")[1].split()
    assert {"envoy", "traefik", "listing-boot"} <= set(commands) and "listing" not in commands
    printed = syncer(
        "bootstrap", "listing-boot", "--output-dir", str(folder), "--greeting", "hi",
        "--renderer-opt", "listing-boot.title=edge", site=site,
    )  # fmt: skip
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == f"# hi from {folder} (edge)\n"
    helped = syncer("bootstrap", "listing-boot", "--help", site=site)
    assert "--greeting TEXT" in helped.stdout and "The first word of the bootstrap." in helped.stdout
    none = syncer("bootstrap", "listing", "--output-dir", str(folder), site=site)
    assert none.returncode == 2 and "renderer 'listing' offers no bootstrap" in none.stderr
    unknown = syncer("bootstrap", "nosuch", "--output-dir", str(folder), site=site)
    assert unknown.returncode == 2 and "unknown renderer 'nosuch'" in unknown.stderr
