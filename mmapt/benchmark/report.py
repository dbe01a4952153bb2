"""Markdown summaries of the benchmark JSON reports."""
from typing import List


def _cell(value, fmt: str = '{}') -> str:
    return '-' if value is None else fmt.format(value)


def _table(header: List[str], rows: List[List[str]]) -> List[str]:
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(row) + ' |' for row in rows]
    return lines


def gpu_markdown(report: dict) -> str:
    """The GPU benchmark's report as Markdown: per architecture the arms
    (images/s, median, tokens, speed-up against the plain square model and
    against the fastest plain arm), the checks, the stage split and the
    tokenizer's share, the overhead counts, training and the profile."""
    env = report['environment']
    settings = report['settings']
    lines = [
        '# GPU benchmark', '',
        f'{env.get("gpu", env["device"])}, torch {env["torch"]}' +
        (f', CUDA {env["cuda"]}' if env.get('cuda') else '') +
        f', {settings["dtype"]}, canvas {settings["canvas"]}, batch 1, '
        f'{len(settings["images"])} images, {settings["repeat"]} timed '
        f'repeats (interleaved), commit {env.get("git_commit")}.', '',
        f'Command: `{settings.get("command", "")}`', ''
    ]
    for name, arch in report['archs'].items():
        arms = arch['arms']
        summary = arch['summary']
        base = arms.get('plain_square', {}).get('total_ms')
        fastest = summary.get('fastest_plain')
        fastest_ms = arms[fastest]['total_ms'] if fastest else None
        lines += [
            f'## EVA-02 {name}', '', f'Attention: {arch["attention_path"]}.',
            ''
        ]
        rows = []
        for arm, r in arms.items():
            rows.append([
                arm, f'{r["img_s"]:.2f}', f'{r["median_ms"]:.2f}',
                _cell(r['tokens']),
                _cell(r['keep_ratio'], '{:.3f}'),
                _cell(base / r['total_ms'] if base else None, '{:.3f}x'),
                _cell(fastest_ms / r['total_ms'] if fastest_ms else None,
                      '{:.3f}x'),
                _cell(r.get('peak_mib'), '{:.0f}')
            ])
        lines += _table([
            'arm', 'img/s', 'median ms', 'tokens', 'keep', 'vs plain square',
            f'vs fastest plain ({fastest})', 'peak MiB'
        ], rows) + ['']
        for arm, why in arch.get('skipped', {}).items():
            lines.append(f'- skipped `{arm}`: {why}')
        for arm, why in arch.get('failed', {}).items():
            lines.append(f'- **failed** `{arm}`: {why}')
        lines += [
            '', f'No-merge overhead (apt_nomerge / plain_square - 1): '
            f'{_cell(summary.get("nomerge_overhead"), "{:.1%}")}; fastest '
            f'APT arm `{summary.get("fastest_apt")}` vs fastest plain arm '
            f'`{fastest}`: '
            f'{_cell(summary.get("fastest_apt_vs_fastest_plain"), "{}x")}.', ''
        ]
        if arch.get('checks'):
            lines += _table(
                ['check', 'worst image', 'max abs diff', 'rel L2 diff'], [[
                    k, c['image'], f'{c["max_abs_diff"]:.3g}',
                    f'{c["rel_l2_diff"]:.3g}'
                ] for k, c in arch['checks'].items()]) + ['']
        if arch.get('stages'):
            stage_names = [
                'tokenizer', 'embedding', 'context', 'blocks', 'unpack'
            ]
            rows = [[
                arm, f'{s["forward_ms"]:.1f}',
                *[_cell(s['stages_ms'].get(n), '{:.2f}')
                  for n in stage_names], f'{s["tokenizer_share"]:.1%}',
                f'{s["outside_blocks_share"]:.1%}'
            ] for arm, s in arch['stages'].items()]
            lines += [
                'Stage split (one forward per image, summed; stage '
                'boundaries as CUDA events, no synchronize):', ''
            ]
            lines += _table(
                ['arm', 'forward ms'] + [f'{n} ms' for n in stage_names] +
                ['tokenizer share', 'outside blocks'], rows) + ['']
        overhead = arch.get('overhead') or {}
        if 'error' in overhead:
            lines += [f'Overhead counts: {overhead["error"]}', '']
        elif overhead:
            rows = []
            for arm in ('plain', 'apt', 'apt_static'):
                if arm in overhead:
                    o = overhead[arm]
                    rows.append([
                        arm,
                        str(o['total_ops']),
                        str(o['outside_blocks']),
                        str(o['total_syncs']),
                        ', '.join(f'{k} {v}'
                                  for k, v in sorted(o['ops'].items()))
                    ])
            lines += [
                f'Overhead counts (one forward of '
                f'{overhead["image"]}):', ''
            ]
            lines += _table([
                'model', 'aten ops', 'outside blocks', 'host syncs',
                'ops per stage'
            ], rows) + ['']
        training = arch.get('training')
        if training:
            rows = [[arm, f'{r["median_ms"]:.2f}', f'{r["img_s"]:.2f}']
                    for arm, r in training['arms'].items()]
            t = training['summary']
            lines += ['Training step (forward + backward, train mode):', '']
            lines += _table(['arm', 'median ms', 'img/s'], rows)
            lines += [
                '', f'APT vs plain square '
                f'{_cell(t["speedup_vs_plain_square"], "{}x")}; padding-free'
                f' APT vs plain window-padded '
                f'{_cell(t["nopad_speedup_vs_plain_window"], "{}x")}.', ''
            ]
            for arm, why in training.get('failed', {}).items():
                lines.append(f'- **failed** training `{arm}`: {why}')
        for arm, prof in (arch.get('profile') or {}).items():
            lines += [f'### Profile: one {arm} forward', '']
            if 'error' in prof:
                lines += [f'failed: {prof["error"]}', '']
                continue
            lines += [
                f'forward {prof["forward_ms"]} ms, kernels busy '
                f'{_cell(prof["kernel_ms"])} ms, GPU idle '
                f'{_cell(prof["gpu_idle_ms"])} ms '
                f'({_cell(prof["gpu_idle_share"], "{:.1%}")}).', ''
            ]
            lines += _table(['stage', 'CPU ms', 'device ms'],
                            [[k, str(v['cpu_ms']),
                              _cell(v['device_ms'])]
                             for k, v in prof['stages'].items()]) + ['']
            lines += ['```', prof['table'].rstrip(), '```', '']
    return '\n'.join(lines) + '\n'
