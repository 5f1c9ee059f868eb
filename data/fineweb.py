"""Download FineWeb10B, pre-tokenized with GPT-2, for the GPT-2 tracks (the kjj0/fineweb10B-gpt2
dataset on the Hugging Face hub: the shards modded-nanogpt's data/cached_fineweb10B.py fetches).

    python data/fineweb.py                     # the validation shard + the 39 train shards the tracks use (~8 GB)
    python data/fineweb.py --train-shards 103  # everything (~21 GB)

Files: fineweb_val_000000.bin and fineweb_train_000001.bin ... (about 100M tokens each) in
data/fineweb10B/. Each shard is fetched into the Hugging Face cache by huggingface_hub, validated
(header and size, nanogpt.data.shard_token_count) and then hard-linked (or copied, across file
systems) into the data folder, atomically. Rerunning resumes: shards already present and valid are
skipped, a damaged one is fetched again. Offline (HF_HUB_OFFLINE=1) it still resolves shards that
are in the cache.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from nanogpt.data import shard_token_count
from nanogpt.errors import UserError, entry_point
from nanogpt.tracks import FINEWEB_DIR, FINEWEB_TRAIN_SHARDS, ROOT

REPO_ID = "kjj0/fineweb10B-gpt2"
REPO_TYPE = "dataset"
AVAILABLE_TRAIN_SHARDS = 103  # fineweb_train_000001 ... 000103 ("num_chunks = 104 # full fineweb10B", with val)
VAL_SHARD = "fineweb_val_000000.bin"


def shard_names(train_shards: int) -> list[str]:
    """The validation shard, then train shards 1 .. train_shards."""
    if not 1 <= train_shards <= AVAILABLE_TRAIN_SHARDS:
        raise UserError(f"--train-shards {train_shards}: the dataset has train shards 1 to {AVAILABLE_TRAIN_SHARDS}")
    return [VAL_SHARD, *(f"fineweb_train_{i:06d}.bin" for i in range(1, train_shards + 1))]


def hub_download(name: str, dest: Path, cache_dir: str | None) -> Path:
    """The shard's path in the Hugging Face cache, downloading it if needed; unreachable is a UserError."""
    try:
        from huggingface_hub import constants, hf_hub_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError:
        raise UserError("data/fineweb.py needs huggingface_hub: pip install huggingface_hub (or pip install -e '.[fineweb]')") from None
    try:
        return Path(hf_hub_download(REPO_ID, name, repo_type=REPO_TYPE, cache_dir=cache_dir))
    except LocalEntryNotFoundError:
        why = ("HF_HUB_OFFLINE is set and it is not in the Hugging Face cache: unset HF_HUB_OFFLINE on a machine with internet"
               if constants.HF_HUB_OFFLINE else
               "the Hugging Face hub is unreachable and it is not in the cache: connect to the internet and rerun")
        raise UserError(f"cannot download {name}: {why}, or copy the shards into {dest}/ and rerun to validate them") from None
    except (HfHubHTTPError, OSError) as e:
        raise UserError(f"cannot download {name} from {REPO_ID}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}; "
                        "check the connection (and HF_TOKEN if the hub asks for one) and rerun") from None


def link_or_copy(source: Path, target: Path) -> None:
    """Place `source` at `target` atomically: a hard link when possible (no second copy), else a copy."""
    tmp = target.with_name(target.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:  # another file system, or one without hard links
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def fetch(name: str, dest: Path, cache_dir: str | None = None) -> str:
    """Make dest/name a valid shard; returns 'present' (skipped) or 'downloaded'."""
    target = dest / name
    if target.exists():
        try:
            shard_token_count(target)
            return "present"
        except UserError as e:
            print(f"{e}: fetching it again", file=sys.stderr)
            target.unlink()
    cached = hub_download(name, dest, cache_dir).resolve()  # the blob behind the snapshot's symlink
    try:
        shard_token_count(cached)
    except UserError as e:
        raise UserError(f"the downloaded {name} is damaged ({e}); delete the cached copy {cached} and rerun") from None
    link_or_copy(cached, target)
    return "downloaded"


def download(train_shards: int = FINEWEB_TRAIN_SHARDS, dest: Path = ROOT / FINEWEB_DIR, cache_dir: str | None = None) -> list[Path]:
    """Fetch and validate the validation shard and the first `train_shards` train shards."""
    names = shard_names(train_shards)
    dest.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names, 1):
        status = fetch(name, dest, cache_dir)
        print(f"[{i}/{len(names)}] {name}: {status}, {shard_token_count(dest / name):,} tokens", flush=True)
    return [dest / name for name in names]


@entry_point(interrupted="interrupted: the shards already fetched are kept (and validated); rerun to resume")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Download FineWeb10B, pre-tokenized with GPT-2, for the GPT-2 tracks (the kjj0/fineweb10B-gpt2 dataset on the "
                    f"Hugging Face hub). By default the validation shard and the {FINEWEB_TRAIN_SHARDS} train shards the tracks use, "
                    f"about 100M tokens each: a download of ~8 GB (all {AVAILABLE_TRAIN_SHARDS}: ~21 GB), whose time is the "
                    "connection's. Resumable: rerunning skips the valid shards already present.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--train-shards", type=int, default=FINEWEB_TRAIN_SHARDS,
                        help="train shards to fetch (the default is what the GPT-2 tracks sample from)")
    parser.add_argument("--dir", type=Path, default=ROOT / FINEWEB_DIR, help="destination folder")
    parser.add_argument("--cache-dir", help="Hugging Face cache; unset: $HF_HUB_CACHE or ~/.cache/huggingface/hub")
    args = parser.parse_args(argv)
    paths = download(args.train_shards, args.dir, args.cache_dir)
    print(f"{args.dir}: 1 validation + {len(paths) - 1} train shards ready")
    return 0


if __name__ == "__main__":
    sys.exit(main())
