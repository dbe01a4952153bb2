"""The GPU benchmark's per-architecture summary: speed-ups, token ratios,
the fastest arms and the attention path that really ran."""
from typing import Dict, Optional

from .core import ratio

#: Every arm of the GPU benchmark, in report order. Each one ends up
#: timed or listed with a reason (skipped, failed, cut).
ARM_NAMES = ('plain_square', 'plain_window', 'plain_square_graph',
             'plain_window_graph', 'plain_square_compiled', 'apt_square',
             'apt_nopad', 'apt_nomerge', 'apt_static', 'apt_static_graph',
             'apt_square_padded')

#: Summary ratios: key -> (numerator arm, denominator arm).
SPEEDUPS = dict(
    speedup_vs_plain_square=('plain_square', 'apt_square'),
    speedup_vs_plain_window=('plain_window', 'apt_square'),
    nopad_speedup_vs_plain_window=('plain_window', 'apt_nopad'),
    nopad_speedup_vs_plain_square=('plain_square', 'apt_nopad'),
    varlen_speedup_vs_padded=('apt_square_padded', 'apt_square'),
    static_graph_speedup_vs_plain_square_graph=('plain_square_graph',
                                                'apt_static_graph'))
TOKEN_RATIOS = dict(
    token_ratio=('plain_square', 'apt_square'),
    token_ratio_vs_plain_window=('plain_window', 'apt_square'),
    nopad_token_ratio_vs_plain_window=('plain_window', 'apt_nopad'))
#: APT arms that are not candidates for "the fastest APT arm".
NOT_APT_CANDIDATES = ('apt_nomerge', 'apt_square_padded')


def kernel_of(info: Dict[str, dict], arm: str) -> Optional[str]:
    """The attention kernel(s) ``arm`` ran (None: not prepared)."""
    return (info.get(arm) or {}).get('attention', {}).get('kernel')


def attention_path(info: Dict[str, dict]) -> str:
    """What APT's attention ran in ``apt_square``, from its counters."""
    record = (info.get('apt_square') or {}).get('attention')
    if not record:
        return 'unknown (apt_square did not run)'
    path = dict(
        varlen='torch.nn.attention.varlen (flash varlen kernel)',
        padded='padded SDPA plan').get(record['kernel'], record['kernel'])
    if record.get('varlen_failed'):
        path += (f' ({record["varlen_failed"]} varlen calls refused: '
                 f'{"; ".join(record["errors"])})')
    return path


def arch_summary(arms: Dict[str, dict], info: Dict[str, dict]) -> dict:
    """Speed-ups and token ratios between timed ``arms`` (None where an
    arm is missing), the fastest plain and APT arms, the no-merge overhead;
    ``varlen_speedup_vs_padded`` only when ``apt_square`` really ran the
    varlen kernel alone (else it would time padded against padded)."""

    def total(arm: Optional[str]) -> Optional[float]:
        return arms[arm]['total_ms'] if arm in arms else None

    def tokens(arm: str) -> Optional[int]:
        return arms[arm]['tokens'] if arm in arms else None

    plain = [a for a in arms if a.startswith(('plain_square', 'plain_window'))]
    apt = [
        a for a in arms if a.startswith('apt_') and a not in NOT_APT_CANDIDATES
    ]
    fastest_plain = min(plain, key=total) if plain else None
    fastest_apt = min(apt, key=total) if apt else None
    summary = {
        key: ratio(total(num), total(den))
        for key, (num, den) in SPEEDUPS.items()
    }
    if kernel_of(info, 'apt_square') != 'varlen':
        summary['varlen_speedup_vs_padded'] = None
    summary.update({
        key: ratio(tokens(num), tokens(den))
        for key, (num, den) in TOKEN_RATIOS.items()
    })
    nomerge = ratio(total('apt_nomerge'), total('plain_square'))
    summary.update(
        nomerge_overhead=None if nomerge is None else round(nomerge - 1, 4),
        fastest_plain=fastest_plain,
        fastest_apt=fastest_apt,
        fastest_apt_vs_fastest_plain=ratio(
            total(fastest_plain), total(fastest_apt)))
    return summary
