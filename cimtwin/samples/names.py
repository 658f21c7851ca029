"""Invented Chinese place names: roads, communities, estates, people.

Names are built from small syllable pools so a 12 km district gets enough unique names while
the committed sample reads like the real North Station area.  Every list is consumed in a
seed-driven order; nothing here is a real address.
"""

from __future__ import annotations

import numpy as np

# Two-character road stems; the first few echo the North Station area.
ROAD_STEMS = (
    "致远",
    "民塘",
    "留仙",
    "新区",
    "民治",
    "梅龙",
    "玉龙",
    "民康",
    "民丰",
    "东环",
    "华业",
    "金龙",
    "腾龙",
    "澜华",
    "人民",
    "工业",
    "和平",
    "龙观",
    "布龙",
    "新塘",
    "逸景",
    "书香",
    "沙吓",
    "水尾",
    "樟坑",
    "白石",
    "上芬",
    "民乐",
    "龙塘",
    "牛栏",
    "岭南",
    "景新",
    "星河",
)
_FIRST = "民龙上新大白樟清松观福景华富鹭章桂君茜库横坂银梅锦凯宝泰"
_SECOND = "治塘芬坑湖岭元和泰康乐丰安兴田园湾盛福山峰源宁城悦"
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高郑梁谢宋唐许邓冯韩曹曾彭萧蔡潘田董袁"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玲建国文辉鹏飞宇婷欣怡浩然子轩梓涵"
COMMUNITY_NAMES = ("北站", "民治", "白石龙", "上芬", "龙塘", "民乐", "樟坑", "民康", "民泰", "新牛")
STREET_NAMES = (
    "民治",
    "龙华",
    "大浪",
    "观湖",
    "福城",
    "观澜",
    "清湖",
    "松元",
    "樟坑径",
    "油松",
)
ESTATE_WORDS = (
    "锦绣",
    "润华",
    "金地",
    "星河",
    "龙悦",
    "华润",
    "万科",
    "碧海",
    "翠林",
    "阳光",
    "御景",
    "泰和",
    "嘉园",
    "美丽",
    "幸福",
    "世纪",
    "东方",
    "水岸",
    "云景",
    "鸿荣",
    "天悦",
    "海逸",
)


def _pairs(rng: np.random.Generator) -> list[str]:
    """All two-syllable stems from the pools, in a seed-dependent order."""
    out = [a + b for a in _FIRST for b in _SECOND if a != b]
    order = rng.permutation(len(out))
    return [out[k] for k in order]


def road_names(rng: np.random.Generator, n: int, mains: list[bool]) -> list[str]:
    """``n`` unique road names; main roads end in 大道, others in 路 or 街."""
    stems = list(ROAD_STEMS) + [s for s in _pairs(rng) if s not in ROAD_STEMS]
    out = []
    for k in range(n):
        stem = stems[k]
        if mains[k]:
            suffix = "大道"
        else:
            suffix = "中路" if k % 7 == 1 else ("街" if rng.random() < 0.25 else "路")
        out.append(stem + suffix)
    return out


def community_names(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` unique community names ending in 社区; the first is 北站社区."""
    stems = list(COMMUNITY_NAMES) + [s for s in _pairs(rng) if s not in COMMUNITY_NAMES]
    return [s + "社区" for s in stems[:n]]


def street_names(n: int) -> list[str]:
    """``n`` street (街道) names, 民治街道 first."""
    return [s + "街道" for s in STREET_NAMES[:n]]


def person_name(rng: np.random.Generator) -> str:
    """An invented two- or three-character person name."""
    s = SURNAMES[int(rng.integers(len(SURNAMES)))]
    g = GIVEN[int(rng.integers(len(GIVEN)))]
    if rng.random() < 0.6:
        g += GIVEN[int(rng.integers(len(GIVEN)))]
    return s + g


def estate_word(rng: np.random.Generator) -> str:
    """A word for naming an estate or office block."""
    return ESTATE_WORDS[int(rng.integers(len(ESTATE_WORDS)))]
