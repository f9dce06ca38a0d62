"""Code lists used by the synthetic hospitals.

The public lists (ICD-10 chapters, ATC level 1, age bands, sex, smoker status, regions, lab
tests and ``NAMED_DOMAINS``) live in :mod:`fedquery.policy.domains`, where policies find them as
named domains; they are re-exported here so the generator and policies share one source.  This
module adds what only the generator needs: the common codes it draws from and
:func:`icd10_chapter_of`.  Plain tuples and dicts only; no IO.
"""

from __future__ import annotations

from fedquery.policy.domains import (
    AGE_BANDS,
    ATC_LEVEL1,
    ICD10_CHAPTERS,
    LAB_TESTS,
    NAMED_DOMAINS,
    REGIONS,
    SEX,
    SMOKER,
    AgeBand,
    AtcGroup,
    IcdChapter,
    LabTest,
)

__all__ = [
    "AGE_BANDS", "ATC_COMMON_CODES", "ATC_LEVEL1", "ICD10_CHAPTERS", "ICD10_COMMON_CODES",
    "LAB_TESTS", "NAMED_DOMAINS", "REGIONS", "SEX", "SMOKER", "AgeBand", "AtcGroup",
    "IcdChapter", "LabTest", "icd10_chapter_of",
]

#: Common WHO ICD-10 codes per chapter, most frequent first (the generator draws from these).
ICD10_COMMON_CODES: dict[str, tuple[str, ...]] = {
    "I": ("A09.9", "B34.9", "A41.9", "A49.9", "B02.9", "A08.4", "A04.7", "B18.1", "A15.0"),
    "II": ("C50.9", "C34.9", "C18.9", "C61", "C43.9", "C67.9", "C25.9", "C16.9", "C64",
           "C85.9", "C92.0", "D12.6"),
    "III": ("D50.9", "D64.9", "D50.0", "D51.9", "D69.6", "D70", "D53.9", "D61.9", "D84.9"),
    "IV": ("E11.9", "E78.0", "E03.9", "E66.9", "E11.2", "E78.5", "E10.9", "E55.9", "E87.1",
           "E05.0", "E86", "E04.9", "E66.0"),
    "V": ("F32.9", "F41.1", "F41.9", "F10.2", "F17.2", "F33.1", "F43.1", "F90.0", "F03",
          "F05.9", "F20.9", "F31.9", "F84.0"),
    "VI": ("G43.9", "G47.3", "G40.9", "G20", "G30.9", "G35", "G62.9", "G45.9", "G56.0",
           "G80.9"),
    "VII": ("H25.9", "H10.9", "H40.1", "H52.1", "H35.3", "H26.9", "H36.0", "H33.0", "H40.9"),
    "VIII": ("H66.9", "H65.9", "H61.2", "H90.3", "H81.1", "H91.1", "H93.1", "H60.9"),
    "IX": ("I10", "I48.9", "I25.1", "I50.9", "I11.9", "I20.9", "I21.9", "I63.9", "I70.2",
           "I80.2", "I26.9", "I49.9", "I35.0", "I64"),
    "X": ("J06.9", "J45.9", "J44.9", "J18.9", "J20.9", "J02.9", "J03.9", "J30.4", "J12.9",
          "J11.1", "J96.0", "J84.1", "J45.0"),
    "XI": ("K21.9", "K29.7", "K57.3", "K80.2", "K40.9", "K35.8", "K59.0", "K92.2", "K85.9",
           "K50.9", "K51.9", "K70.3", "K74.6"),
    "XII": ("L20.9", "L30.9", "L40.0", "L03.1", "L70.0", "L50.9", "L21.9", "L89.9", "L97"),
    "XIII": ("M54.5", "M17.9", "M16.9", "M19.9", "M81.9", "M79.1", "M75.1", "M51.2", "M10.9",
             "M06.9"),
    "XIV": ("N39.0", "N18.3", "N40", "N20.0", "N17.9", "N18.5", "N95.1", "N92.0", "N76.0",
            "N30.0"),
    "XV": ("O80.0", "O82.9", "O24.4", "O13", "O14.9", "O21.0", "O34.2", "O42.9", "O47.9",
           "O99.0"),
    "XVI": ("P07.3", "P59.9", "P22.1", "P22.0", "P36.9", "P05.1", "P92.9", "P70.4", "P21.9"),
    "XVII": ("Q21.0", "Q21.1", "Q65.2", "Q53.9", "Q90.9", "Q35.9", "Q62.0", "Q25.0", "Q38.1",
             "Q66.0"),
    "XVIII": ("R10.4", "R07.4", "R50.9", "R51", "R05", "R06.0", "R55", "R53", "R42", "R11",
              "R31", "R73.0"),
    "XIX": ("S72.0", "S52.5", "S06.0", "S82.6", "S42.2", "S93.4", "T78.4", "T14.9", "S00.9",
            "T81.4"),
    "XX": ("W19", "W01", "W10", "X59", "V89.2", "W54", "Y83.9", "Y84.9"),
    "XXI": ("Z00.0", "Z01.8", "Z30.0", "Z51.1", "Z03.9", "Z76.0", "Z86.7", "Z92.2", "Z95.1",
            "Z96.6", "Z79.4"),
    "XXII": ("U07.1", "U07.2", "U09.9", "U08.9", "U10.9"),
}

#: Common 7-character ATC codes (chemical substance level) per group, most frequent first.
ATC_COMMON_CODES: dict[str, tuple[str, ...]] = {
    "A": ("A02BC01", "A10BA02", "A02BC02", "A11CC05", "A10AE04", "A10AB05", "A06AD11",
          "A10BK01", "A10BH01", "A10BJ02", "A07DA03"),
    "B": ("B01AC06", "B01AF02", "B01AF01", "B01AC04", "B03AA07", "B01AB05", "B03BB01",
          "B03BA01", "B01AA03"),
    "C": ("C10AA05", "C08CA01", "C07AB07", "C09AA05", "C03CA01", "C09CA01", "C10AA07",
          "C07AB02", "C09AA02", "C03AA03", "C03DA01", "C10AA01", "C01AA05"),
    "D": ("D07AC01", "D07AA02", "D01AC01", "D06AX09", "D05AX02", "D10AD03", "D11AH01"),
    "G": ("G04CA02", "G03AA07", "G03CA03", "G04CB01", "G04BD08", "G04BE03", "G02CB03"),
    "H": ("H03AA01", "H02AB06", "H02AB02", "H02AB04", "H03BB02", "H01BA02", "H05AA02"),
    "J": ("J01CA04", "J01CR02", "J01FA10", "J07BB02", "J01MA02", "J01XE01", "J01DD04",
          "J01AA02", "J01EE01", "J05AB01", "J02AC01", "J01XA01"),
    "L": ("L04AX03", "L02BG04", "L02BA01", "L04AB04", "L04AB02", "L01FA01", "L01FF01",
          "L04AD02", "L01BA01", "L03AB07", "L01XX05"),
    "M": ("M01AE01", "M01AB05", "M04AA01", "M01AE02", "M05BA04", "M01AH01", "M03BX01",
          "M05BX04"),
    "N": ("N02BE01", "N06AB06", "N02AX02", "N06AB10", "N05BA01", "N02AA05", "N05CF01",
          "N06AX11", "N02AA01", "N03AX14", "N03AX09", "N05AH04", "N04BA02", "N06DA02",
          "N06BA04"),
    "P": ("P01AB01", "P01BA02", "P02CA01", "P03AC04", "P02CF01", "P01BE03"),
    "R": ("R03AC02", "R06AE07", "R03BA02", "R03AK06", "R01AD09", "R05CB01", "R03BB04",
          "R03DC03", "R06AX27"),
    "S": ("S01XA20", "S01EE01", "S01ED01", "S01AA01", "S02AA15", "S01BA07", "S01LA05"),
    "V": ("V03AB15", "V08AB02", "V03AE02", "V04CA02", "V03AF03", "V03AC03"),
}

def icd10_chapter_of(code: str) -> str:
    """The roman numeral of the ICD-10 chapter whose block range contains ``code``.

    >>> icd10_chapter_of("E11.9"), icd10_chapter_of("T78.4"), icd10_chapter_of("H66.9")
    ('IV', 'XIX', 'VIII')
    """
    category = code[:3].upper()
    for chapter in ICD10_CHAPTERS:
        first, last = chapter.codes.split("-")
        if first <= category <= last:
            return chapter.numeral
    raise ValueError(f"{code!r} is not in any ICD-10 chapter")
